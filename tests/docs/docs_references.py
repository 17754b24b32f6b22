"""What the documents mention, and what the repository and the running app really have.

Only code is checked: inline code spans and fenced blocks (and markdown links, and `METHOD /path`
anywhere), so prose can change freely while a typo in a path, a make target, a variable, a metric
or an endpoint fails the tests.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: The documents kept honest: the README, everything under docs/, architecture/ and chaos/.
DOC_GLOBS = ("README.md", "docs/**/*.md", "architecture/*.md", "chaos/*.md")

#: Top-level entries whose mention is taken as a repository path.
_TOP_DIRS = ("app", "broker", "k8s", "terraform", "grafana", "loki", "docs", "architecture", "chaos", "tests",
             ".github", ".ci")
_TOP_FILES = ("Makefile", "Dockerfile", "pyproject.toml", "uv.lock", "README.md", ".dockerignore", ".gitignore")

#: Mentions that look like repository paths but are not, each with the reason.
NOT_REPOSITORY_PATHS = {
    "grafana/alloy": "the Helm chart grafana/alloy (docs/observability.md)",
    "terraform/global/dns": "docs/multi-cloud.md says this root is not written yet",
}

_FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1\s*$", re.S | re.M)
_INLINE = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_PATH = re.compile(
    r"(?<![\w./$-])((?:" + "|".join(re.escape(d) for d in _TOP_DIRS) + r")/[\w.*<>{}/:-]*"
    r"|(?:" + "|".join(re.escape(f) for f in _TOP_FILES) + r")(?![\w.-]))"
)
_MAKE = re.compile(r"(?:^|[\s;&|(`])make\s+([a-z][\w-]*)")
_ENV = re.compile(r"\bNATSQ_[A-Z0-9_]*[A-Z0-9](?![A-Za-z0-9_*<])")
# dramatiq_nats is the broker's import name, not a metric.
_METRIC = re.compile(r"\b(?!dramatiq_nats\b)(?:natsq|dramatiq)_[a-z0-9_]*[a-z0-9](?![\w-])")
# `natsq.queue.<queue>` and the like are NATS subjects, not modules: a module path ends there.
_MODULE = re.compile(r"(?<![\w./-])(natsq|dramatiq_nats)\.([a-z_]+)\b(?![(\w/.])")
_METHOD_PATH = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)\s+(/[\w/<>{}.?=&%:-]*)")
_GATEWAY_URL = re.compile(r"https?://(?:127\.0\.0\.1|localhost|0\.0\.0\.0):8000(/[^\s`'\"\\)]*)?")


@dataclass
class Doc:
    path: Path
    text: str
    code: list[str] = field(default_factory=list)  # inline spans and fenced blocks

    @property
    def name(self) -> str:
        return str(self.path.relative_to(REPO))


def documents() -> list[Doc]:
    found: dict[Path, Doc] = {}
    for pattern in DOC_GLOBS:
        for path in sorted(REPO.glob(pattern)):
            if path.is_file() and path not in found:
                found[path] = parse(path)
    return list(found.values())


def parse(path: Path) -> Doc:
    text = path.read_text()
    doc = Doc(path, text)
    prose = _FENCE.sub(lambda m: (doc.code.append(m.group(2)), "\n")[1], text)
    doc.code.extend(m.group(2) for m in _INLINE.finditer(prose))
    return doc


# -- what the documents mention ---------------------------------------------------------------

def mentioned_paths(doc: Doc) -> set[str]:
    return {m.group(1).rstrip(".:,") for code in doc.code for m in _PATH.finditer(code)}


def linked_targets(doc: Doc) -> set[str]:
    targets = set()
    for m in _LINK.finditer(_FENCE.sub("", doc.text)):
        target = m.group(1)
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        targets.add(target.split("#", 1)[0])
    return targets


def mentioned_make_targets(doc: Doc) -> set[str]:
    return {m.group(1) for code in doc.code for m in _MAKE.finditer(code)}


def mentioned_env_vars(doc: Doc) -> set[str]:
    return set(_ENV.findall(doc.text))


def mentioned_metrics(doc: Doc) -> set[str]:
    return {m.group(0) for code in doc.code for m in _METRIC.finditer(code)}


def mentioned_modules(doc: Doc) -> set[str]:
    return {f"{m.group(1)}.{m.group(2)}" for code in doc.code for m in _MODULE.finditer(code)}


def mentioned_endpoints(doc: Doc) -> set[tuple[str, str]]:
    """(method, path) pairs; method None for gateway URLs in commands (the bare base URL names no route)."""
    found = {(m.group(1), m.group(2)) for m in _METHOD_PATH.finditer(doc.text)}
    for code in doc.code:
        found |= {(None, m.group(1)) for m in _GATEWAY_URL.finditer(code) if m.group(1)}
    return found


def normalize_endpoint(path: str) -> str:
    """`/task/<id>`, `/task/{task_id}` and `/task/8a0f…` compare alike; no query, no trailing dot."""
    path = path.split("?", 1)[0].rstrip(".:")
    parts = []
    for part in path.split("/"):
        if re.fullmatch(r"<[^>]*>|\{[^}]*\}|[0-9a-f]{4,}.*|\$\w+|\$\{\w+\}|….*", part):
            part = "<>"
        parts.append(part)
    return "/".join(parts)


# -- what exists ------------------------------------------------------------------------------

def path_exists(mention: str) -> bool:
    mention = mention.split("::", 1)[0]
    pattern = re.sub(r"<[^>]*>|\{[^}]*\}", "*", mention).rstrip("/")
    if any(ch in pattern for ch in "*?["):
        return any(REPO.glob(pattern))
    target = REPO / pattern
    # Files that operators create from a committed template (fleet.tfvars from fleet.tfvars.example).
    return target.exists() or target.with_name(target.name + ".example").exists()


def test_function_exists(mention: str) -> bool:
    """`tests/x/test_y.py::test_name` names a test function that exists."""
    if "::" not in mention:
        return True
    file, name = mention.split("::", 1)
    tree = ast.parse((REPO / file).read_text())
    return any(isinstance(node, ast.FunctionDef) and node.name == name.split("[")[0] for node in ast.walk(tree))


@cache
def make_targets() -> frozenset[str]:
    text = (REPO / "Makefile").read_text()
    return frozenset(m.group(1) for m in re.finditer(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.M))


@cache
def known_env_vars() -> frozenset[str]:
    """`natsq.settings.Settings` fields with their prefix and `_FILE` variants, and what the code reads."""
    from natsq.settings import Settings

    prefix = Settings.model_config["env_prefix"]
    names = set()
    for name in Settings.model_fields:
        names |= {f"{prefix}{name.upper()}", f"{prefix}{name.upper()}_FILE"}
    for source in [*(REPO / "app").rglob("*.py"), *(REPO / "broker").rglob("*.py")]:
        names |= set(re.findall(r"""(?:environ(?:\.get)?|getenv|setdefault)\s*[(\[]\s*["'](NATSQ_\w+)["']""",
                                source.read_text()))
    return frozenset(names)


def _dramatiq_source(relative: str) -> str:
    import dramatiq

    return (Path(dramatiq.__file__).parent / relative).read_text()


@cache
def dramatiq_env_vars() -> frozenset[str]:
    """Dramatiq's own settings (`dramatiq_prom_port`, ...): lower-case names that look like metrics."""
    import dramatiq

    names = set()
    for source in Path(dramatiq.__file__).parent.rglob("*.py"):
        names |= set(re.findall(r"""getenv\(\s*["'](dramatiq_\w+)["']""", source.read_text()))
    return frozenset(names)


_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
             "gauge": ("",), "summary": ("_count", "_sum", "_created")}


@cache
def known_metrics() -> frozenset[str]:
    """Every sample name the gateway and the workers can expose."""
    from prometheus_client import REGISTRY

    import natsq.metrics as gateway_metrics
    from dramatiq_nats import QueueStats

    class _Broker:
        def stats(self):
            return {"default": QueueStats(pending=0, in_flight=0, redelivered=0, scheduled=0, dead_lettered=0)}

    families = [f for f in REGISTRY.collect() if f.name.startswith("natsq_")]
    families += list(gateway_metrics.QueueCollector(_Broker()).collect())
    names = set()
    for family in families:
        names.add(family.name)
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
    # Dramatiq's Prometheus middleware declares its metrics when a worker boots: read the names
    # from its source (counters there already end in _total).
    # natsq's worker middleware (app/natsq/worker_metrics.py) likewise, on top of Dramatiq's.
    worker_sources = _dramatiq_source("middleware/prometheus.py") + (REPO / "app" / "natsq" / "worker_metrics.py").read_text()
    for name in re.findall(r"""["']((?:dramatiq|natsq)_[a-z_]+)["']""", worker_sources):
        if name in dramatiq_env_vars():
            continue
        base = name.removesuffix("_total")
        names |= {name, base + "_total", base + "_created", base + "_bucket", base + "_count", base + "_sum"}
    return frozenset(names)


@cache
def gateway_routes() -> frozenset[tuple[str, str]]:
    """(method, normalized rule) of the gateway as built by its application factory (connects nothing)."""
    from natsq.gateway import create_app
    from natsq.settings import Settings

    import logging

    root = logging.getLogger()
    saved = root.level, [(handler, handler.formatter) for handler in root.handlers]
    try:
        app = create_app(Settings(env="development"))
    finally:  # create_app formats the root handlers as JSON: leave pytest's as they were
        root.setLevel(saved[0])
        for handler, formatter in saved[1]:
            handler.setFormatter(formatter)
    routes = set()
    for rule in app.url_map.iter_rules():
        for method in rule.methods - {"OPTIONS"}:
            routes.add((method, normalize_endpoint(rule.rule)))
    return frozenset(routes)
