"""natsq dashboards as code (Grafana Foundation SDK).

Panels are declared as data (``ROWS``) and rendered with the SDK's builders, so the
queries can also be read by the tests: every PromQL expression here is parsed by
promtool and, where its metrics come from the gateway or the worker, evaluated against
a real Prometheus scraping a running stack (tests/observability/).

Datasources are template variables (``${datasource}`` for Prometheus,
``${loki_datasource}`` for Loki) because dashboards provisioned from ConfigMaps do not
resolve ``__inputs`` placeholders. Queries are scoped by the namespace label Prometheus
attaches to Kubernetes targets: ``$namespace`` (gateway and workers, ``natsq``) and
``$data_namespace`` (NATS and Valkey, ``natsq-data``).

Write the JSON with ``.venv/bin/python grafana/generate.py`` (never edit it by hand).
"""

from __future__ import annotations

import dataclasses

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import logs, loki, prometheus, stat, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dash_models

DASHBOARD_UID = "natsq-overview"

PROMETHEUS = dash_models.DataSourceRef(type_val="prometheus", uid="${datasource}")
LOKI = dash_models.DataSourceRef(type_val="loki", uid="${loki_datasource}")

# Gateway and workers run in one namespace, NATS and Valkey in another (k8s/base).
NS = 'namespace="$namespace"'
DATA_NS = 'namespace="$data_namespace"'
ALL_NS = 'namespace=~"$namespace|$data_namespace"'
# Each Valkey pod also runs a redis_exporter for its Sentinel: keep its series out.
VALKEY = DATA_NS + ', container!="sentinel-exporter"'
RATE = "[$__rate_interval]"


@dataclasses.dataclass(frozen=True)
class Query:
    """One PromQL (or LogQL for logs panels) target of a panel."""

    expr: str
    legend: str = ""


@dataclasses.dataclass(frozen=True)
class PanelSpec:
    """A panel: ``kind`` is ``timeseries``, ``stat`` or ``logs`` (Loki)."""

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8
    height: int = 8


def _ratio(selector: str, status_regex: str, by: str) -> str:
    """Share of requests whose status matches, 0 (not "no data") when none does."""
    matching = f'rate(natsq_http_requests_total{{{selector}, status=~"{status_regex}"}}{RATE})'
    everything = f"rate(natsq_http_requests_total{{{selector}}}{RATE})"
    return (
        f"sum by ({by}) ({matching} or 0 * {everything})\n"
        f"/\nsum by ({by}) ({everything})"
    )


def _quantile(q: float, metric: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{NS}}}{RATE})))"


ROWS: tuple[tuple[str, tuple[PanelSpec, ...]], ...] = (
    (
        "Gateway API",
        (
            PanelSpec(
                "API request rate",
                "Requests per second answered by the gateway, by route and HTTP status.",
                (
                    Query(
                        f"sum by (route, status) (rate(natsq_http_requests_total{{{NS}}}{RATE}))",
                        "{{route}} {{status}}",
                    ),
                ),
                unit="reqps",
            ),
            PanelSpec(
                "API latency p50 / p99",
                "Request duration percentiles by route, from natsq_http_request_duration_seconds.",
                (
                    Query(_quantile(0.5, "natsq_http_request_duration_seconds", "route"), "p50 {{route}}"),
                    Query(_quantile(0.99, "natsq_http_request_duration_seconds", "route"), "p99 {{route}}"),
                ),
                unit="s",
            ),
            PanelSpec(
                "API error ratio",
                "Share of requests answered with 5xx (server errors, alerted at 5%) and 4xx "
                "(client errors: bad payloads, auth).",
                (
                    Query(_ratio(NS, "5..", "route"), "5xx {{route}}"),
                    Query(_ratio(NS, "4..", "route"), "4xx {{route}}"),
                ),
                unit="percentunit",
            ),
            PanelSpec(
                "Enqueue failures",
                "POST /task calls that could not be published to JetStream, by reason "
                "(nats_unavailable, timeout, ...). The series appears with the first failure.",
                (
                    Query(
                        f"sum by (reason) (rate(natsq_enqueue_failures_total{{{NS}}}{RATE}))",
                        "{{reason}}",
                    ),
                ),
                unit="ops",
                width=12,
            ),
            PanelSpec(
                "JetStream publish latency p50 / p99",
                "Time until JetStream acknowledged a task publish (natsq_publish_duration_seconds).",
                (
                    Query(
                        f"histogram_quantile(0.5, sum by (le) (rate(natsq_publish_duration_seconds_bucket{{{NS}}}{RATE})))",
                        "p50",
                    ),
                    Query(
                        f"histogram_quantile(0.99, sum by (le) (rate(natsq_publish_duration_seconds_bucket{{{NS}}}{RATE})))",
                        "p99",
                    ),
                ),
                unit="s",
                width=12,
            ),
        ),
    ),
    (
        "Queues and workers",
        (
            PanelSpec(
                "Tasks submitted",
                "Tasks accepted per second by the gateway (202, durably enqueued), by actor "
                "(natsq_tasks_submitted_total). Compare with the worker processing rate.",
                (
                    Query(
                        f"sum by (actor_name) (rate(natsq_tasks_submitted_total{{{NS}}}{RATE}))",
                        "{{actor_name}}",
                    ),
                ),
                unit="ops",
                width=12,
            ),
            PanelSpec(
                "Time in queue p50 / p99",
                "Time from the gateway accepting a task to a worker starting its first attempt, by "
                "actor (natsq_task_queue_wait_seconds). Rising while the processing rate is flat: "
                "workers are saturated. A delayed task's wait includes its delay.",
                (
                    Query(_quantile(0.5, "natsq_task_queue_wait_seconds", "actor_name"), "p50 {{actor_name}}"),
                    Query(_quantile(0.99, "natsq_task_queue_wait_seconds", "actor_name"), "p99 {{actor_name}}"),
                ),
                unit="s",
                width=12,
            ),
            PanelSpec(
                "Queue backlog",
                "Messages per queue and state from the broker (pending, in_flight, scheduled, "
                "dead_lettered). Every gateway pod reports the same value, hence max.",
                (
                    Query(f"max by (queue, state) (natsq_queue_messages{{{NS}}})", "{{queue}} {{state}}"),
                ),
            ),
            PanelSpec(
                "Worker processing rate",
                "Tasks finished per second by actor (dramatiq_messages_total), and the part that "
                "raised (dramatiq_message_errors_total).",
                (
                    Query(
                        f"sum by (actor_name) (rate(dramatiq_messages_total{{{NS}}}{RATE}))",
                        "done {{actor_name}}",
                    ),
                    Query(
                        f"sum by (actor_name) (rate(dramatiq_message_errors_total{{{NS}}}{RATE}))",
                        "failed {{actor_name}}",
                    ),
                ),
                unit="ops",
            ),
            PanelSpec(
                "Tasks in progress",
                "Tasks a worker thread is executing right now, by actor.",
                (
                    Query(
                        f"sum by (actor_name) (dramatiq_messages_inprogress{{{NS}}})",
                        "{{actor_name}}",
                    ),
                ),
            ),
            PanelSpec(
                "Task duration p50 / p99",
                "Execution time of tasks by actor (dramatiq_message_duration_milliseconds).",
                (
                    Query(_quantile(0.5, "dramatiq_message_duration_milliseconds", "actor_name"), "p50 {{actor_name}}"),
                    Query(_quantile(0.99, "dramatiq_message_duration_milliseconds", "actor_name"), "p99 {{actor_name}}"),
                ),
                unit="ms",
            ),
            PanelSpec(
                "Retries and dead letters",
                "Retries scheduled per second and tasks dead-lettered per second (retries "
                "exhausted), by actor.",
                (
                    Query(
                        f"sum by (actor_name) (rate(dramatiq_message_retries_total{{{NS}}}{RATE}))",
                        "retried {{actor_name}}",
                    ),
                    Query(
                        f"sum by (actor_name) (rate(dramatiq_message_rejects_total{{{NS}}}{RATE}))",
                        "dead-lettered {{actor_name}}",
                    ),
                ),
                unit="ops",
            ),
            PanelSpec(
                "Dead-letter stream and redeliveries",
                "Messages held in the dead-letter stream per queue (kept 14 days), and messages "
                "JetStream delivered more than once (worker crash or ack timeout).",
                (
                    Query(
                        f'max by (queue) (natsq_queue_messages{{{NS}, state="dead_lettered"}})',
                        "dead letters {{queue}}",
                    ),
                    Query(f"max by (queue) (natsq_queue_redelivered{{{NS}}})", "redelivered {{queue}}"),
                ),
                kind="stat",
            ),
        ),
    ),
    (
        "Valkey (results)",
        (
            PanelSpec(
                "Valkey operations per second",
                "Commands processed per second by each Valkey server (redis_exporter).",
                (
                    Query(
                        f"sum by (pod) (rate(redis_commands_processed_total{{{VALKEY}}}{RATE}))",
                        "{{pod}}",
                    ),
                ),
                unit="ops",
            ),
            PanelSpec(
                "Valkey memory",
                "Memory used by each Valkey server, and its maxmemory when one is set.",
                (
                    Query(f"max by (pod) (redis_memory_used_bytes{{{VALKEY}}})", "used {{pod}}"),
                    Query(f"max by (pod) (redis_memory_max_bytes{{{VALKEY}}} > 0)", "max {{pod}}"),
                ),
                unit="bytes",
            ),
            PanelSpec(
                "Valkey replication",
                "Replicas attached to each primary (expect 2), replica link to the primary "
                "(1 = up), and servers answering the exporter (1 = up).",
                (
                    Query(
                        f'max by (pod) (redis_connected_slaves{{{VALKEY}}}) and on (pod) max by (pod) (redis_instance_info{{{VALKEY}, role="master"}})',
                        "replicas of {{pod}}",
                    ),
                    Query(f"max by (pod) (redis_master_link_up{{{VALKEY}}})", "link up {{pod}}"),
                    Query(f"max by (pod) (redis_up{{{VALKEY}}})", "up {{pod}}"),
                ),
            ),
        ),
    ),
    (
        "NATS / JetStream",
        (
            PanelSpec(
                "NATS servers and routes",
                "Servers reporting to the exporter (expect 3) and cluster routes per server "
                "(0 on a peer means it is cut off).",
                (
                    Query(f"count(nats_varz_routes{{{DATA_NS}}})", "servers"),
                    Query(f"max by (pod) (nats_varz_routes{{{DATA_NS}}})", "routes {{pod}}"),
                ),
                width=6,
            ),
            PanelSpec(
                "JetStream storage used",
                "File storage used by JetStream on each server, as a share of its limit (alert at 80%).",
                (
                    Query(
                        f"max by (pod) (nats_varz_jetstream_stats_storage{{{DATA_NS}}} / (nats_varz_jetstream_config_max_storage{{{DATA_NS}}} > 0))",
                        "{{pod}}",
                    ),
                ),
                unit="percentunit",
                width=6,
            ),
            PanelSpec(
                "JetStream consumers",
                "Per durable consumer: messages not yet delivered, delivered but not acked, "
                "and redelivered.",
                (
                    Query(
                        f"max by (stream_name, consumer_name) (nats_consumer_num_pending{{{DATA_NS}}})",
                        "pending {{stream_name}}/{{consumer_name}}",
                    ),
                    Query(
                        f"max by (stream_name, consumer_name) (nats_consumer_num_ack_pending{{{DATA_NS}}})",
                        "ack pending {{stream_name}}/{{consumer_name}}",
                    ),
                    Query(
                        f"max by (stream_name, consumer_name) (nats_consumer_num_redelivered{{{DATA_NS}}})",
                        "redelivered {{stream_name}}/{{consumer_name}}",
                    ),
                ),
                width=6,
            ),
            PanelSpec(
                "NATS messages and slow consumers",
                "Messages in and out per second per server, and slow consumers (clients NATS "
                "had to disconnect because they could not keep up).",
                (
                    Query(f"sum by (pod) (rate(nats_varz_in_msgs{{{DATA_NS}}}{RATE}))", "in {{pod}}"),
                    Query(f"sum by (pod) (rate(nats_varz_out_msgs{{{DATA_NS}}}{RATE}))", "out {{pod}}"),
                    Query(f"max by (pod) (nats_varz_slow_consumers{{{DATA_NS}}})", "slow consumers {{pod}}"),
                ),
                width=6,
            ),
        ),
    ),
    (
        "Pods",
        (
            PanelSpec(
                "Pod CPU",
                "CPU cores used per pod (cAdvisor).",
                (
                    Query(
                        f'sum by (pod) (rate(container_cpu_usage_seconds_total{{{ALL_NS}, container!="", container!="POD"}}{RATE}))',
                        "{{pod}}",
                    ),
                ),
                unit="short",
            ),
            PanelSpec(
                "Pod memory",
                "Working-set memory per pod (cAdvisor): what the OOM killer compares to the limit.",
                (
                    Query(
                        f'sum by (pod) (container_memory_working_set_bytes{{{ALL_NS}, container!="", container!="POD"}})',
                        "{{pod}}",
                    ),
                ),
                unit="bytes",
            ),
            PanelSpec(
                "Container restarts (1h)",
                "Container restarts in the last hour per pod (kube-state-metrics).",
                (
                    Query(
                        f"sum by (pod) (increase(kube_pod_container_status_restarts_total{{{ALL_NS}}}[1h]))",
                        "{{pod}}",
                    ),
                ),
            ),
        ),
    ),
    (
        "Logs",
        (
            PanelSpec(
                "Logs (filter with task_id)",
                "Gateway and worker logs. Type a task id in the task_id box to follow one task "
                "across the gateway and every attempt on the workers (task_id is Loki "
                "structured metadata, so the filter needs no parsing).",
                (
                    Query(
                        f'{{{NS}, app_kubernetes_io_name="natsq"}} | task_id=~"${{task_id:regex}}.*"',
                    ),
                ),
                kind="logs",
                width=24,
                height=12,
            ),
            PanelSpec(
                "Log lines by level",
                "Log lines per level (a label set by Alloy from the JSON `level` field).",
                (
                    Query(
                        f'sum by (level) (count_over_time({{{NS}, app_kubernetes_io_name="natsq"}}[$__auto]))',
                        "{{level}}",
                    ),
                ),
                kind="loki_timeseries",
                width=24,
                height=6,
            ),
        ),
    ),
)


def prometheus_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every Prometheus target on the dashboard."""
    return [
        (panel.title, query.expr)
        for _, panels in ROWS
        for panel in panels
        if panel.kind in ("timeseries", "stat")
        for query in panel.queries
    ]


def loki_queries() -> list[tuple[str, str]]:
    """(panel title, LogQL) for every Loki target on the dashboard."""
    return [
        (panel.title, query.expr)
        for _, panels in ROWS
        for panel in panels
        if panel.kind in ("logs", "loki_timeseries")
        for query in panel.queries
    ]


def _ref_id(index: int) -> str:
    return chr(ord("A") + index)


def _panel(spec: PanelSpec) -> dash.Panel:
    if spec.kind == "logs":
        panel = (
            logs.Panel()
            .datasource(LOKI)
            .show_time(True)
            .wrap_log_message(True)
            .enable_log_details(True)
            .sort_order(common.LogsSortOrder.DESCENDING)
        )
        for i, query in enumerate(spec.queries):
            panel.with_target(loki.Dataquery().expr(query.expr).ref_id(_ref_id(i)).max_lines(1000))
    elif spec.kind == "loki_timeseries":
        panel = timeseries.Panel().datasource(LOKI).unit(spec.unit)
        for i, query in enumerate(spec.queries):
            panel.with_target(
                loki.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(_ref_id(i))
            )
    else:
        if spec.kind == "stat":
            panel = stat.Panel()
        else:
            panel = (
                timeseries.Panel()
                .fill_opacity(10)
                .legend(
                    common_builders.VizLegendOptions()
                    .display_mode(common.LegendDisplayMode.TABLE)
                    .placement(common.LegendPlacement.BOTTOM)
                    .show_legend(True)
                    .calcs(["lastNotNull", "max"])
                )
            )
        panel = panel.datasource(PROMETHEUS).unit(spec.unit)
        for i, query in enumerate(spec.queries):
            panel.with_target(
                prometheus.Dataquery()
                .expr(query.expr)
                .legend_format(query.legend or "__auto")
                .ref_id(_ref_id(i))
            )
    return panel.title(spec.title).description(spec.description).span(spec.width).height(spec.height)


def overview() -> dash.Dashboard:
    """The operators' one-page view of natsq: API, queues, workers, stores, pods, logs."""
    board = (
        dash.Dashboard("natsq overview")
        .uid(DASHBOARD_UID)
        .description("natsq: gateway, queues, workers, Valkey, NATS JetStream, pods and logs.")
        .tags(["natsq"])
        .editable()
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .tooltip(dash_models.DashboardCursorSync.CROSSHAIR)
        .with_variable(dash.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(dash.DatasourceVariable("loki_datasource").label("Loki").type("loki"))
        .with_variable(
            dash.QueryVariable("namespace")
            .label("Namespace")
            .description("Namespace of the gateway and the workers.")
            .datasource(PROMETHEUS)
            .query("label_values(natsq_http_requests_total, namespace)")
            .refresh(dash_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dash_models.VariableSort.ALPHABETICAL_ASC)
        )
        .with_variable(
            dash.QueryVariable("data_namespace")
            .label("Data namespace")
            .description("Namespace of NATS and Valkey.")
            .datasource(PROMETHEUS)
            .query("label_values(nats_varz_routes, namespace)")
            .refresh(dash_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dash_models.VariableSort.ALPHABETICAL_ASC)
        )
        .with_variable(
            dash.TextBoxVariable("task_id")
            .label("task_id")
            .description("Show only the log lines of this task (leave empty for all).")
        )
        .link(
            dash.DashboardLink("Runbooks")
            .type(dash_models.DashboardLinkType.LINK)
            .url("https://github.com/natsq/natsq/blob/main/docs/observability.md")
            .target_blank(True)
        )
    )
    for title, panels in ROWS:
        board.with_row(dash.Row(title))
        for spec in panels:
            board.with_panel(_panel(spec))
    return board
