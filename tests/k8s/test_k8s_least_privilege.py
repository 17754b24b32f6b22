"""Least privilege in the rendered overlays: each workload logs in to NATS and Valkey as its own
user, holds only its own passwords, and only the bootstrap Job may declare streams.

The users themselves are proved on real servers: the permissions by tests/app/test_nats_roles.py
and tests/app/test_valkey_roles.py, the rendered configurations by test_k8s_server_configs.py.
"""

import re

from k8s_manifests import Rendered, container_env, pod_spec

# Workload -> the role it runs as (natsq-users.conf, users.acl).
ROLES = {("Deployment", "natsq-gateway"): "gateway", ("Deployment", "natsq-worker"): "worker",
         ("Job", "natsq-bootstrap"): "admin"}


def _app_workloads(rendered: Rendered):
    for (kind, name), role in ROLES.items():
        workload = rendered.get(kind, name, "natsq")
        assert workload is not None, f"{kind}/{name} is missing"
        yield workload, pod_spec(workload)["containers"][0], role


def test_each_workload_runs_as_its_own_nats_and_valkey_user(rendered: Rendered):
    for workload, container, role in _app_workloads(rendered):
        env = container_env(rendered, container)
        assert env["NATSQ_NATS_USER"] == role, workload["metadata"]["name"]
        if role == "admin":
            # The bootstrap declares the streams (natsq.bootstrap forces declare) and uses no Valkey.
            assert env["NATSQ_VALKEY_PASSWORD_FILE"] == env["NATSQ_VALKEY_SENTINEL_PASSWORD_FILE"] == ""
            assert "NATSQ_VALKEY_USER" not in env
        else:
            assert env["NATSQ_NATS_DECLARE"] == "false", "only the admin user may declare streams"
            assert env["NATSQ_VALKEY_USER"] == role


def test_each_workload_mounts_only_its_own_passwords(rendered: Rendered):
    for workload, container, role in _app_workloads(rendered):
        for volume in pod_spec(workload)["volumes"]:
            if not volume.get("secret", {}).get("secretName", "").startswith("natsq-app"):  # every role's passwords
                continue
            items = volume["secret"].get("items")
            assert items, f"{workload['metadata']['name']} mounts every role's passwords"
            for item in items:
                owner = item["key"].split("-")[0]
                # The gateway also serves the admin API and console, which have a NATS user of their own.
                shared = item["key"] == "valkey-sentinel-password" or (role, item["key"]) == ("gateway", "console-nats-password")
                assert owner == role or shared, (role, item["key"])


def test_nats_defines_exactly_the_users_the_workloads_use(rendered: Rendered):
    sts = rendered.get("StatefulSet", "nats", "natsq-data")
    config = next(v["configMap"]["name"] for v in pod_spec(sts)["volumes"] if v["name"] == "config")
    data = rendered.get("ConfigMap", config, "natsq-data")["data"]
    account = re.search(r"^  NATSQ \{(.*?)^  \}", data["nats.conf"], re.S | re.M).group(1)
    account = re.sub(r"#.*", "", account)
    assert re.search(r"^\s*include \./natsq-users\.conf$", account, re.M), "the account must include the users"
    assert "users:" not in account and "password" not in account, "no user besides the role users"
    users = re.findall(r"^\s*user: (\w+)$", data["natsq-users.conf"], re.M)
    used = set()
    for _, container, _ in _app_workloads(rendered):
        env = container_env(rendered, container)
        used |= {env[name] for name in ("NATSQ_NATS_USER", "NATSQ_CONSOLE_NATS_USER") if env.get(name)}
    assert sorted(users) == sorted(used)
    # Each user's password variable is set in the NATS pod from the Secret.
    env = {e["name"]: e for e in next(c for c in pod_spec(sts)["containers"] if c["name"] == "nats")["env"]}
    for variable in re.findall(r"password: \$(\w+)", data["natsq-users.conf"]):
        assert env[variable]["valueFrom"]["secretKeyRef"]["name"].startswith("nats-auth"), variable


def test_valkey_acl_users_use_the_apps_namespace(rendered: Rendered):
    namespace = rendered.get("ConfigMap", "natsq-config", "natsq")["data"]["NATSQ_NAMESPACE"]
    valkey = rendered.get("StatefulSet", "valkey", "natsq-data")
    configure = next(c for c in pod_spec(valkey)["initContainers"] if c["name"] == "configure")
    env = {e["name"]: e.get("value") for e in configure["env"]}
    assert env["NATSQ_NAMESPACE"] == namespace, "the ACL users' keys must be the app's (NATSQ_NAMESPACE)"
    exporter = next(c for c in pod_spec(valkey)["containers"] if c["name"] == "exporter")
    exporter_env = {e["name"]: e for e in exporter["env"]}
    assert exporter_env["REDIS_USER"]["value"] == "exporter"
    assert exporter_env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "exporter-password"


def test_streams_are_declared_before_the_gateway_and_workers_start(rendered: Rendered):
    """Argo CD: NATS (wave 0), then the bootstrap hook (wave 1), then the app (wave 2)."""
    job = rendered.get("Job", "natsq-bootstrap", "natsq")
    annotations = job["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    assert annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"
    wave = lambda obj: int(obj["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))  # noqa: E731
    assert wave(rendered.get("StatefulSet", "nats", "natsq-data")) < wave(job)
    for name in ("natsq-gateway", "natsq-worker"):
        assert wave(job) < wave(rendered.get("Deployment", name, "natsq"))
    assert pod_spec(job)["containers"][0]["command"] == ["python", "-m", "natsq.bootstrap"]
