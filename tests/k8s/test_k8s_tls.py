"""TLS on every hop of the production overlays (k8s/components/tls), checked on the rendered output.

Every overlay that runs with NATSQ_ENV=production must have it: the app refuses plain URLs there.
The servers with these configurations are run by test_k8s_server_configs.py (TLS-only NATS cluster
and Valkey with Sentinel); what no local test can show (cert-manager issuing the certificates in a
cluster) is checked here: the certificates name every host the clients dial.
"""

import fnmatch
import re
from pathlib import Path

import pytest
import requests.adapters
from urllib3.util import connection

from k8s_manifests import Rendered, app_containers, container_env, pod_spec


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
        for workload, container in app_containers(production):
            env = container_env(production, container)
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
        for _, app in app_containers(production):
            for url in container_env(production, app)["NATSQ_NATS_URL"].split(","):
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
        for _, app in app_containers(production):
            for sentinel in (container_env(production, app).get("NATSQ_VALKEY_SENTINELS") or "").split(","):
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
        for workload, container in app_containers(rendered):
            for name in [n for n in __import__("os").environ if n.startswith("NATSQ_")]:
                monkeypatch.delenv(name)
            for name, value in container_env(rendered, container).items():
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


def test_the_gateway_serves_https_with_the_rendered_command(all_rendered, tmp_path):
    """The prod gateway's command (gunicorn with --certfile/--keyfile) run locally with a trustme
    certificate for the Service name: the probes' path answers over HTTPS, plain HTTP gets no answer."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import requests
    import trustme

    rendered = all_rendered["prod"]
    gateway = rendered.get("Deployment", "natsq-gateway", "natsq")
    container = pod_spec(gateway)["containers"][0]
    probe = container["readinessProbe"]["httpGet"]
    assert probe["scheme"] == "HTTPS" and probe["port"] == "https"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    https_volume = next(v for v in pod_spec(gateway)["volumes"]
                        if v.get("secret", {}).get("secretName") == "natsq-gateway-https")
    names = _certificate_names(rendered, "natsq", "natsq-gateway-https")
    ca = trustme.CA()
    server_cert = ca.issue_cert(*names)
    certs = tmp_path / "https"
    certs.mkdir()
    server_cert.cert_chain_pems[0].write_to_path(str(certs / "tls.crt"))
    server_cert.private_key_pem.write_to_path(str(certs / "tls.key"))
    ca.cert_pem.write_to_path(str(certs / "ca.crt"))
    command = [arg.replace(mounts[https_volume["name"]], str(certs)) for arg in container["command"]]
    assert str(certs / "tls.crt") in command, "gunicorn must read the mounted certificate"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATSQ_")}
    env |= {"NATSQ_ENV": "development", "NATSQ_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "gunicorn.log", "w"))
    session = requests.Session()
    session.mount("https://", _Resolve127())
    try:
        url = f"https://{names[0]}:{port}/healthz"
        deadline = time.monotonic() + 30
        while True:
            try:
                response = session.get(url, verify=str(certs / "ca.crt"), timeout=5)
                break
            except (requests.ConnectionError, requests.Timeout):  # gunicorn still starting
                assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()[-2000:]
                time.sleep(0.2)
        assert response.status_code == 200
        with pytest.raises((requests.ConnectionError, requests.Timeout)):  # no plain HTTP answer
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=30)


class _Resolve127(requests.adapters.HTTPAdapter):
    """Connects every host name to 127.0.0.1, so the certificate is checked against the Service
    name the cluster's callers use."""

    def send(self, request, *args, **kwargs):
        original = connection.create_connection

        def to_loopback(address, *a, **kw):
            return original(("127.0.0.1", address[1]), *a, **kw)

        connection.create_connection = to_loopback
        try:
            return super().send(request, *args, **kwargs)
        finally:
            connection.create_connection = original
