"""Helpers for the observability tests: the queries under test, PromQL selector
extraction, promtool and a throwaway Prometheus server."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "grafana" / "alerts.yaml"
COMPONENT = ROOT / "k8s" / "components" / "observability"
DOCS = ROOT / "docs" / "observability.md"

sys.path.insert(0, str(ROOT / "grafana"))
import dashboards  # noqa: E402
import generate  # noqa: E402

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
NO_PROMTOOL = "promtool not installed (Debian package `prometheus`: apt-get install -y --no-install-recommends prometheus)"

# Metrics the running app emits (gateway and worker); everything else comes from
# exporters that exist only in a cluster (NATS exporter, redis_exporter, cAdvisor,
# kube-state-metrics) and is checked by parsing only.
APP_METRIC_PREFIXES = ("natsq_", "dramatiq_")

# Grafana variables -> values for evaluating dashboard queries outside Grafana.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$namespace": "natsq",
    "$data_namespace": "natsq-data",
}


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def alert_queries() -> list[tuple[str, str]]:
    return [(rule["alert"], rule["expr"]) for rule in alert_rules()]


def substitute(expr: str, variables: dict[str, str] = GRAFANA_VARIABLES) -> str:
    # Longest names first so $namespace does not eat into $data_namespace's neighbours.
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(name, variables[name])
    return expr


_TOKEN = re.compile(
    r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    |(?P<range>\[[^\]]*\])
    |(?P<matchers>\{[^}]*\})
    |(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[smhdwy]?)
    |(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    |(?P<other>\S)
    """,
    re.VERBOSE,
)
_AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}


def selectors(expr: str) -> list[tuple[str, str]]:
    """Vector selectors of a PromQL expression as (metric name, "{matchers}" or "")."""
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expr)]
    found = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else (None, "")
        if kind == "ident" and text in _GROUPING:
            # Skip the label list that follows: by (a, b)
            if nxt[1] == "(":
                depth, i = 0, i + 1
                while i < len(tokens):
                    depth += {"(": 1, ")": -1}.get(tokens[i][1], 0)
                    if depth == 0:
                        break
                    i += 1
        elif kind == "ident" and text not in _AGGREGATIONS and text not in _KEYWORDS and nxt[1] != "(":
            found.append((text, nxt[1] if nxt[0] == "matchers" else ""))
        i += 1
    return found


def metric_names(expr: str) -> set[str]:
    return {name for name, _ in selectors(expr)}


def is_app_query(expr: str) -> bool:
    """True when every metric of the expression comes from the gateway or the worker."""
    names = metric_names(expr)
    return bool(names) and all(name.startswith(APP_METRIC_PREFIXES) for name in names)


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def check_exprs_with_promtool(named_exprs: list[tuple[str, str]], tmp_path: Path) -> subprocess.CompletedProcess:
    """Parse expressions with promtool by wrapping each as a recording rule."""
    rules = [
        {"record": f"natsq:check:{i}", "expr": expr, "labels": {"source": name[:60]}}
        for i, (name, expr) in enumerate(named_exprs)
    ]
    path = tmp_path / "exprs.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "exprs", "rules": rules}]}, width=1000))
    return promtool("check", "rules", str(path))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrometheusServer:
    """A real Prometheus on a free loopback port, talked to through its HTTP API."""

    def __init__(self, url: str):
        self.url = url

    def get(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.get("/api/v1/query", query=expr)["result"]

    def wait_for(self, expr: str, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.5)


@contextlib.contextmanager
def prometheus_server(scrape_configs: list[dict], rule_files: list[Path] = ()):
    """Run Prometheus (1 s scrape and evaluation interval) until the block exits."""
    workdir = Path(tempfile.mkdtemp(prefix="natsq-prometheus-"))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": scrape_configs,
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(workdir / "prometheus.log", "w")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = PrometheusServer(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((workdir / "prometheus.log").read_text()[-3000:])
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub generates for the headings of a Markdown document."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors
