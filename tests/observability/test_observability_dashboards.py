"""The generated dashboard: up to date, wired to template datasources, complete."""

from __future__ import annotations

import json

import observability_support as obs

REQUIRED_PANELS = {
    "API request rate",
    "API latency p50 / p99",
    "API error ratio",
    "Queue backlog",
    "Worker processing rate",
    "Retries and dead letters",
    "Valkey operations per second",
    "Valkey memory",
    "NATS servers and routes",
    "JetStream storage used",
    "JetStream consumers",
    "Pod CPU",
    "Pod memory",
    "Logs (filter with task_id)",
}


def load_dashboard() -> dict:
    return json.loads((obs.ROOT / "grafana" / "natsq-overview.json").read_text())


def panels(board: dict) -> list[dict]:
    return [panel for panel in board["panels"] if panel["type"] != "row"]


def test_generated_files_are_up_to_date():
    assert obs.generate.main(["--check"]) == 0, "run: .venv/bin/python grafana/generate.py"


def test_component_copy_is_identical():
    copy = obs.COMPONENT / "dashboards" / "natsq-overview.json"
    assert copy.read_text() == (obs.ROOT / "grafana" / "natsq-overview.json").read_text()


def test_required_panels_present():
    titles = {panel["title"] for panel in panels(load_dashboard())}
    assert REQUIRED_PANELS <= titles, REQUIRED_PANELS - titles


def test_datasources_are_template_variables():
    board = load_dashboard()
    assert "__inputs" not in board
    variables = {var["name"]: var for var in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["loki_datasource"]["type"] == "datasource"
    assert variables["loki_datasource"]["query"] == "loki"
    allowed = [
        {"type": "prometheus", "uid": "${datasource}"},
        {"type": "loki", "uid": "${loki_datasource}"},
    ]
    for panel in panels(board):
        assert panel["datasource"] in allowed, panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"]) == panel["datasource"]
    for name in ("namespace", "data_namespace"):
        assert variables[name]["datasource"] == allowed[0]


def test_logs_panel_filters_by_task_id_text_variable():
    board = load_dashboard()
    variables = {var["name"]: var for var in board["templating"]["list"]}
    assert variables["task_id"]["type"] == "textbox"
    (logs,) = [panel for panel in panels(board) if panel["type"] == "logs"]
    assert logs["datasource"] == {"type": "loki", "uid": "${loki_datasource}"}
    (target,) = logs["targets"]
    assert "${task_id" in target["expr"]
    # task_id is structured metadata set by Alloy (loki/config.alloy), not a stream label.
    selector = target["expr"].split("}")[0]
    assert "task_id" not in selector


def test_every_query_is_namespaced_and_has_unique_ref_ids():
    for panel in panels(load_dashboard()):
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert "$namespace" in target["expr"] or "$data_namespace" in target["expr"], panel["title"]


def test_panels_do_not_overlap():
    occupied = set()
    for panel in load_dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & occupied, panel["title"]
        occupied |= cells
