"""Loki values and the Alloy pipeline.

No Alloy or Loki binary can be installed offline here (neither is packaged for Debian
or PyPI), so the Alloy file is parsed by a small parser for the subset of Alloy syntax
it uses and its component graph is checked; `alloy fmt` runs too when a binary is on PATH.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

import observability_support as obs

ALLOY_FILE = obs.ROOT / "loki" / "config.alloy"
LOKI_VALUES = obs.ROOT / "loki" / "values.yaml"

_ALLOY_TOKEN = re.compile(
    r"""
    (?P<comment>//[^\n]*|/\*.*?\*/)
    |(?P<string>"(?:\\.|[^"\\\n])*")
    |(?P<number>-?\d+(?:\.\d+)?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<punct>[{}\[\](),.=])
    |(?P<space>\s+)
    |(?P<error>.)
    """,
    re.VERBOSE | re.DOTALL,
)


class AlloyParser:
    """Parses blocks, attributes and literal/list/object/reference expressions."""

    def __init__(self, text: str):
        self.tokens = []
        for match in _ALLOY_TOKEN.finditer(text):
            kind = match.lastgroup
            if kind == "error":
                line = text.count("\n", 0, match.start()) + 1
                raise SyntaxError(f"unexpected {match.group()!r} on line {line}")
            if kind not in ("comment", "space"):
                self.tokens.append((kind, match.group()))
        self.pos = 0
        self.references: list[str] = []

    def peek(self, offset: int = 0):
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else (None, None)

    def take(self, kind: str | None = None, text: str | None = None):
        token = self.peek()
        if token[0] is None or (kind and token[0] != kind) or (text and token[1] != text):
            raise SyntaxError(f"expected {text or kind}, got {token[1]!r} (token {self.pos})")
        self.pos += 1
        return token[1]

    def body(self, closing: str | None) -> list[dict]:
        items = []
        while self.peek()[1] != closing:
            name = self.take("ident")
            if self.peek()[1] == "=":
                self.take(text="=")
                items.append({"attribute": name, "value": self.expr()})
                continue
            while self.peek()[1] == ".":
                self.take(text=".")
                name += "." + self.take("ident")
            label = self.take("string")[1:-1] if self.peek()[0] == "string" else None
            self.take(text="{")
            items.append({"block": name, "label": label, "body": self.body("}")})
            self.take(text="}")
        return items

    def expr(self):
        kind, text = self.peek()
        if kind == "string":
            self.pos += 1
            return text[1:-1]
        if kind == "number":
            self.pos += 1
            return float(text)
        if text == "[":
            self.take(text="[")
            values = []
            while self.peek()[1] != "]":
                values.append(self.expr())
                if self.peek()[1] != "]":
                    self.take(text=",")
            self.take(text="]")
            return values
        if text == "{":
            self.take(text="{")
            values = {}
            while self.peek()[1] != "}":
                key = self.take()
                self.take(text="=")
                values[key.strip('"')] = self.expr()
                if self.peek()[1] != "}":
                    self.take(text=",")
            self.take(text="}")
            return values
        if kind == "ident":
            if text in ("true", "false", "null"):
                self.pos += 1
                return {"true": True, "false": False, "null": None}[text]
            reference = self.take("ident")
            while self.peek()[1] == ".":
                self.take(text=".")
                reference += "." + self.take("ident")
            self.references.append(reference)
            return {"ref": reference}
        raise SyntaxError(f"unexpected {text!r} (token {self.pos})")


def parse_alloy() -> tuple[list[dict], list[str]]:
    parser = AlloyParser(ALLOY_FILE.read_text())
    blocks = parser.body(None)
    return blocks, parser.references


def components() -> dict[str, dict]:
    blocks, _ = parse_alloy()
    return {f"{block['block']}.{block['label']}": block for block in blocks if "block" in block}


def attribute(block: dict, name: str):
    (value,) = [item["value"] for item in block["body"] if item.get("attribute") == name]
    return value


def sub_blocks(block: dict, name: str) -> list[dict]:
    found = []
    for item in block["body"]:
        if item.get("block") == name:
            found.append(item)
        if "body" in item:
            found += sub_blocks(item, name)
    return found


def test_alloy_config_parses():
    blocks, _ = parse_alloy()
    assert blocks


def test_alloy_parser_rejects_broken_syntax():
    with pytest.raises(SyntaxError):
        AlloyParser('loki.write "x" {\n  endpoint {\n    url = "http://a"\n  }\n').body(None)


def test_alloy_references_point_at_declared_components():
    declared = components()
    _, references = parse_alloy()
    for reference in references:
        assert any(reference.startswith(name + ".") for name in declared), reference


def test_alloy_pipeline_chain():
    declared = components()
    assert set(declared) == {
        "discovery.kubernetes.pods",
        "discovery.relabel.natsq_pods",
        "loki.source.kubernetes.natsq_pods",
        "loki.process.natsq",
        "loki.write.loki",
    }
    assert attribute(declared["discovery.kubernetes.pods"], "role") == "pod"
    relabel = declared["discovery.relabel.natsq_pods"]
    assert attribute(relabel, "targets") == {"ref": "discovery.kubernetes.pods.targets"}
    source = declared["loki.source.kubernetes.natsq_pods"]
    assert attribute(source, "targets") == {"ref": "discovery.relabel.natsq_pods.output"}
    assert attribute(source, "forward_to") == [{"ref": "loki.process.natsq.receiver"}]
    assert attribute(declared["loki.process.natsq"], "forward_to") == [{"ref": "loki.write.loki.receiver"}]


def test_relabel_produces_the_labels_the_dashboard_queries():
    relabel = components()["discovery.relabel.natsq_pods"]
    targets = {attribute(rule, "target_label") for rule in sub_blocks(relabel, "rule")
               if any(item.get("attribute") == "target_label" for item in rule["body"])}
    assert {"namespace", "pod", "container", "app_kubernetes_io_name"} <= targets
    for _, expr in obs.dashboards.loki_queries():
        stream_selector = expr[expr.index("{") + 1: expr.index("}")]
        labels = set(re.findall(r"([a-z_]+)\s*=", stream_selector))
        assert labels <= targets | {"level"}, labels


def test_level_is_a_label_and_task_id_structured_metadata():
    process = components()["loki.process.natsq"]
    (json_stage,) = sub_blocks(process, "stage.json")
    assert {"level", "task_id"} <= set(attribute(json_stage, "expressions"))
    (labels,) = sub_blocks(process, "stage.labels")
    assert set(attribute(labels, "values")) == {"level"}
    (metadata,) = sub_blocks(process, "stage.structured_metadata")
    assert set(attribute(metadata, "values")) == {"task_id"}


def test_alloy_writes_to_the_loki_release():
    (endpoint,) = sub_blocks(components()["loki.write.loki"], "endpoint")
    url = attribute(endpoint, "url")
    values = yaml.safe_load(LOKI_VALUES.read_text())
    assert values["gateway"]["enabled"] is False  # so Alloy pushes to Loki's own Service
    assert url == "http://loki.monitoring.svc.cluster.local:3100/loki/api/v1/push"
    # auth_enabled false: Alloy sends no tenant; the two must agree.
    assert values["loki"]["auth_enabled"] is False
    assert not any(item.get("attribute") == "tenant_id" for item in endpoint["body"])


def test_loki_values_monolithic_with_structured_metadata():
    values = yaml.safe_load(LOKI_VALUES.read_text())
    assert values["deploymentMode"] == "SingleBinary"
    assert values["singleBinary"]["replicas"] >= 1
    for target in ("read", "write", "backend"):
        assert values[target]["replicas"] == 0
    loki = values["loki"]
    assert loki["commonConfig"]["replication_factor"] == 1
    assert loki["storage"]["type"] == "filesystem"
    (schema,) = loki["schemaConfig"]["configs"]
    # Structured metadata needs the TSDB index and schema v13.
    assert schema["store"] == "tsdb" and schema["schema"] == "v13"
    assert schema["object_store"] == loki["storage"]["type"]
    assert loki["limits_config"]["allow_structured_metadata"] is True
    assert loki["compactor"]["retention_enabled"] is True
    assert re.fullmatch(r"\d+h", loki["limits_config"]["retention_period"])


@pytest.mark.skipif(shutil.which("alloy") is None, reason="alloy binary not available offline (not on PyPI/Debian/npm)")
def test_alloy_fmt_accepts_config():
    result = subprocess.run(["alloy", "fmt", str(ALLOY_FILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
