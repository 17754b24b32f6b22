"""TLS on every hop of the production overlays (k8s/components/tls), checked on the rendered output.

Every overlay that runs with NATSQ_ENV=production must have it: the app refuses plain URLs there.
The servers with these configurations are run by test_k8s_server_configs.py (TLS-only NATS cluster
and Valkey with Sentinel); what no local test can show (cert-manager issuing the certificates in a
cluster) is checked here: the certificates name every host the clients dial.
"""

import fnmatch
import re

from k8s_manifests import APP_IMAGE, Rendered, containers, pod_spec


def _production(rendered: Rendered) -> bool:
    return rendered.get("ConfigMap", "natsq-config", "natsq")["data"].get("NATSQ_ENV", "production") == "production"


def _productions(all_rendered: dict[str, Rendered]) -> list[Rendered]:
    """The overlays that run with NATSQ_ENV=production (dev and ci may stay plain)."""
    return [rendered for rendered in all_rendered.values() if _production(rendered)]


def test_every_production_overlay_has_tls(all_rendered):
    production = sorted(name for name, rendered in all_rendered.items() if _production(rendered))
    assert {"prod", "prod-aws", "prod-hetzner", "prod-ovh", "staging"} <= set(production)
    for name in production:
        assert all_rendered[name].get("Certificate", "nats-tls", "natsq-data"), name


def _app_env(rendered: Rendered, container: dict) -> dict:
    values = {}
    for source in container.get("envFrom", []):
        values |= rendered.get("ConfigMap", source["configMapRef"]["name"], "natsq")["data"]
    return values | {e["name"]: e.get("value") for e in container.get("env", [])}


def _app_containers(rendered: Rendered):
    for workload in rendered.workloads():
        for container in containers(workload):
            if container["image"].split(":")[0].split("@")[0] == APP_IMAGE:
                yield workload, container


def _certificate_names(rendered: Rendered, namespace: str, secret: str) -> list[str]:
    certificate = next(c for c in rendered.of_kind("Certificate")
                       if c["metadata"]["namespace"] == namespace and c["spec"]["secretName"] == secret)
    return certificate["spec"].get("dnsNames", []) + certificate["spec"].get("ipAddresses", [])


def _covered(host: str, names: list[str]) -> bool:
    # A wildcard covers exactly one DNS label (RFC 6125), which fnmatch's `*` does not enforce.
    return any(fnmatch.fnmatch(host, name) and host.count(".") == name.count(".") for name in names)


def test_the_app_uses_tls_with_its_own_client_certificate(all_rendered):
    for production in _productions(all_rendered):
        secrets_seen = set()
        for workload, container in _app_containers(production):
            env = _app_env(production, container)
            assert all(url.strip().startswith("tls://") for url in env["NATSQ_NATS_URL"].split(",")), env["NATSQ_NATS_URL"]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
            for service in ("NATS", "VALKEY"):
                for part, key in (("CA", "ca.crt"), ("CERT", "tls.crt"), ("KEY", "tls.key")):
                    path = env[f"NATSQ_{service}_TLS_{part}_FILE"]
                    directory, _, name = path.rpartition("/")
                    secret = volumes[mounts[directory]]["secret"]["secretName"]
                    assert name == key, path
                    assert production.get("Certificate", secret, "natsq"), f"{path}: {secret} is no Certificate's"
                    secrets_seen.add((workload["metadata"]["name"], secret))
        # One certificate per workload: each can be replaced on its own.
        assert len({secret for _, secret in secrets_seen}) == len({name for name, _ in secrets_seen}) == 3


def test_nats_requires_tls_on_the_client_port_and_the_routes(all_rendered):
    for production in _productions(all_rendered):
        sts = production.get("StatefulSet", "nats", "natsq-data")
        config = next(v["configMap"]["name"] for v in pod_spec(sts)["volumes"] if v["name"] == "config")
        data = production.get("ConfigMap", config, "natsq-data")["data"]
        conf = re.sub(r"#.*", "", data["nats.conf"])
        cluster = re.search(r"^cluster \{(.*?)^\}", conf, re.S | re.M).group(1)
        assert re.search(r"^\s*include \./route-tls\.conf$", cluster, re.M)
        outside = conf.replace(cluster, "")
        assert re.search(r"^include \./client-tls\.conf$", outside, re.M)
        for name in ("client-tls.conf", "route-tls.conf"):
            block = re.sub(r"#.*", "", data[name])
            assert re.search(r"tls \{[^}]*verify: true", block, re.S), f"{name}: client certificates required"
            for file in re.findall(r"(?:cert|key|ca)_file: (\S+)", block):
                assert file.startswith("/etc/nats-tls/"), file
        assert re.search(r"^no_advertise: true$", data["route-tls.conf"], re.M), "clients must not be sent IP URLs"
        container = next(c for c in pod_spec(sts)["containers"] if c["name"] == "nats")
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/nats-tls")
        secret = next(v for v in pod_spec(sts)["volumes"] if v["name"] == mount["name"])["secret"]["secretName"]
        names = _certificate_names(production, "natsq-data", secret)
        # The name the app dials, and every route's host.
        for _, app in _app_containers(production):
            for url in _app_env(production, app)["NATSQ_NATS_URL"].split(","):
                assert _covered(re.match(r"tls://([^:]+):", url.strip()).group(1), names), url
        for e in container["env"]:
            if e["name"].startswith("NATS_ROUTE_") and e["name"][-1].isdigit():
                assert _covered(re.search(r"@([^:]+):", e["value"]).group(1), names), e["value"]


def test_valkey_and_sentinel_listen_on_tls_only(all_rendered):
    for production in _productions(all_rendered):
        sts = production.get("StatefulSet", "valkey", "natsq-data")
        spec = pod_spec(sts)
        configure = next(c for c in spec["initContainers"] if c["name"] == "configure")
        tls_dir = next(e["value"] for e in configure["env"] if e["name"] == "TLS_DIR")
        volumes = {v["name"]: v for v in spec["volumes"]}
        secrets = set()
        for container in [configure, *spec["containers"]]:
            mount = next((m for m in container.get("volumeMounts", []) if m["mountPath"] == tls_dir), None)
            assert mount, f"{container['name']} does not mount the certificate"
            secrets.add(volumes[mount["name"]]["secret"]["secretName"])
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            if "REDIS_ADDR" in env:  # the exporters
                assert env["REDIS_ADDR"].startswith("rediss://localhost:"), env["REDIS_ADDR"]
                assert env["REDIS_EXPORTER_TLS_CLIENT_CERT_FILE"] == f"{tls_dir}/tls.crt"
        (secret,) = secrets
        names = _certificate_names(production, "natsq-data", secret)
        assert _covered("localhost", names)
        for _, app in _app_containers(production):
            for sentinel in (_app_env(production, app).get("NATSQ_VALKEY_SENTINELS") or "").split(","):
                assert _covered(sentinel.strip().rpartition(":")[0], names), sentinel
        # Sentinel announces the servers by these names: the app dials them for the primary.
        assert _covered(f"valkey-0.{sts['spec']['serviceName']}.natsq-data.svc.cluster.local", names)


def test_the_production_settings_pass_the_apps_tls_check(all_rendered, tmp_path, monkeypatch):
    """Each app container's environment, as rendered, loaded by natsq's Settings: with
    NATSQ_ENV=production it refuses plain URLs, so a plain overlay would stop every pod at start.
    Secret files are stand-ins under tmp_path (Settings reads them; the TLS files it only passes on)."""
    from k8s_app_env import _settings_class

    _, settings_class = _settings_class()
    checked = 0
    for rendered in all_rendered.values():
        for workload, container in _app_containers(rendered):
            for name in [n for n in __import__("os").environ if n.startswith("NATSQ_")]:
                monkeypatch.delenv(name)
            for name, value in _app_env(rendered, container).items():
                if name.endswith("_FILE") and value and not name.endswith(("_CA_FILE", "_CERT_FILE", "_KEY_FILE")):
                    stand_in = tmp_path / value.strip("/").replace("/", "_")
                    stand_in.write_text("secret-stand-in")
                    value = str(stand_in)
                monkeypatch.setenv(name, value)
            settings = settings_class()
            checked += 1
            if _production(rendered):
                assert settings.env == "production", f"{rendered.name} {workload['metadata']['name']}"
    assert checked >= 3 * len(all_rendered)
