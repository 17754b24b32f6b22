"""Every path, make target, setting, metric and endpoint the documents mention exists."""

from __future__ import annotations

import importlib.util

import pytest

from docs_references import (
    NOT_REPOSITORY_PATHS,
    REPO,
    documents,
    dramatiq_env_vars,
    gateway_routes,
    known_env_vars,
    known_metrics,
    linked_targets,
    make_targets,
    mentioned_endpoints,
    mentioned_env_vars,
    mentioned_make_targets,
    mentioned_metrics,
    mentioned_modules,
    mentioned_paths,
    normalize_endpoint,
    path_exists,
    test_function_exists as names_an_existing_test,
)

DOCS = documents()
IDS = [doc.name for doc in DOCS]


def test_the_documents_are_found():
    names = set(IDS)
    for required in ("architecture/design.md", "docs/decisions.md", "docs/how-to-run.md", "docs/troubleshooting.md",
                     "chaos/README.md", "docs/kubernetes.md"):
        assert required in names


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_mentioned_paths_exist(doc):
    missing = sorted(p for p in mentioned_paths(doc) if p not in NOT_REPOSITORY_PATHS and not path_exists(p))
    assert not missing, f"{doc.name} mentions paths that do not exist: {missing}"
    stale_tests = sorted(p for p in mentioned_paths(doc) if path_exists(p) and not names_an_existing_test(p))
    assert not stale_tests, f"{doc.name} names test functions that do not exist: {stale_tests}"


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_relative_links_resolve(doc):
    broken = sorted(t for t in linked_targets(doc) if not (doc.path.parent / t).exists())
    assert not broken, f"{doc.name} links to files that do not exist: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_mentioned_make_targets_exist(doc):
    unknown = sorted(mentioned_make_targets(doc) - make_targets())
    assert not unknown, f"{doc.name} mentions make targets the Makefile lacks: {unknown}"


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_mentioned_natsq_variables_are_read_by_the_app(doc):
    unknown = sorted(mentioned_env_vars(doc) - known_env_vars())
    assert not unknown, f"{doc.name} mentions NATSQ_ variables the app does not read: {unknown}"


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_mentioned_metrics_are_exposed(doc):
    unknown = sorted(mentioned_metrics(doc) - known_metrics() - dramatiq_env_vars())
    assert not unknown, f"{doc.name} mentions natsq_/dramatiq_ metrics nothing exposes: {unknown}"


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_mentioned_modules_exist(doc):
    missing = sorted(m for m in mentioned_modules(doc) if importlib.util.find_spec(m) is None)
    assert not missing, f"{doc.name} mentions Python modules that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_mentioned_gateway_endpoints_exist(doc):
    routes = gateway_routes()
    paths = {path for _, path in routes}
    unknown = []
    for method, path in sorted(mentioned_endpoints(doc), key=str):
        normalized = normalize_endpoint(path)
        if (method is None and normalized not in paths) or (method is not None and (method, normalized) not in routes):
            unknown.append(f"{method or 'any'} {path}")
    assert not unknown, f"{doc.name} mentions gateway endpoints the app does not serve: {unknown}"


# -- the checks themselves catch typos ----------------------------------------------------------

def test_the_checks_catch_typos(tmp_path):
    from docs_references import parse

    doc_path = tmp_path / "typos.md"
    doc_path.write_text(
        "Set `NATSQ_ACK_WAIT` and run `make tset`; see `broker/conection.py` and\n"
        "`natsq_http_request_total`. Prose may say NATSQ_ACK_WAIT_MS or natsq_anything.\n\n"
        "```sh\ncurl -X POST http://127.0.0.1:8000/tasks\n```\n\nThen GET /task/<id>/result.\n"
    )
    doc = parse(doc_path)
    assert mentioned_env_vars(doc) - known_env_vars() == {"NATSQ_ACK_WAIT"}
    assert mentioned_make_targets(doc) - make_targets() == {"tset"}
    assert {p for p in mentioned_paths(doc) if not path_exists(p)} == {"broker/conection.py"}
    assert mentioned_metrics(doc) - known_metrics() == {"natsq_http_request_total"}
    endpoints = {(m, normalize_endpoint(p)) for m, p in mentioned_endpoints(doc)}
    assert (None, "/tasks") in endpoints and ("GET", "/task/<>/result") in endpoints
    assert not endpoints & gateway_routes()


def test_the_known_sets_come_from_the_code():
    assert {"NATSQ_ACK_WAIT_MS", "NATSQ_JWT_SECRET_FILE", "NATSQ_BIND", "NATSQ_GATEWAY_THREADS"} <= known_env_vars()
    assert {"natsq_http_requests_total", "natsq_queue_messages", "natsq_publish_duration_seconds_bucket",
            "dramatiq_messages_total", "dramatiq_message_duration_milliseconds_bucket"} <= known_metrics()
    assert {("POST", "/task"), ("GET", "/task/<>"), ("GET", "/stats"), ("GET", "/readyz")} <= gateway_routes()
    assert "dramatiq_prom_port" in dramatiq_env_vars()
