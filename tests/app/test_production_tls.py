"""With NATSQ_ENV=production the app refuses plain-text URLs to NATS and Valkey at start.

The production overlays' settings pass this check: tests/k8s/test_k8s_tls.py loads them.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from natsq.settings import Settings
from tests.conftest import ROOT, subprocess_env

TLS = {"valkey_tls_ca_file": "/ca.crt", "valkey_tls_cert_file": "/tls.crt", "valkey_tls_key_file": "/tls.key"}


@pytest.mark.parametrize("settings, message", [
    ({"nats_url": "nats://user:s3cret@nats.natsq-data.svc:4222", "valkey_url": "rediss://valkey:6379"},
     "NATSQ_NATS_URL must be tls:// for nats.natsq-data.svc, not nats://"),
    ({"nats_url": "tls://a:4222,nats://b:4222", "valkey_url": "rediss://valkey:6379"},
     "NATSQ_NATS_URL must be tls:// for b"),
    ({"nats_url": "tls://nats:4222", "valkey_url": "redis://:s3cret@valkey:6379/0"},
     "NATSQ_VALKEY_URL must be rediss:// for valkey, not redis://"),
    ({"nats_url": "tls://nats:4222", "valkey_sentinels": "valkey-0.h:26379,valkey-1.h:26379"},
     "the Sentinels (valkey-0.h, valkey-1.h) need NATSQ_VALKEY_TLS_CA_FILE"),
])
def test_production_refuses_plain_text_to_other_hosts(settings, message):
    with pytest.raises(ValidationError) as error:
        Settings(env="production", nats_password="s3cret", **settings)
    assert message in str(error.value)
    assert "s3cret" not in str(error.value), "the error must not show credentials"


@pytest.mark.parametrize("settings", [
    {"nats_url": "tls://nats:4222", "valkey_url": "rediss://valkey:6379/0"},
    {"nats_url": "tls://nats:4222", "valkey_sentinels": "valkey-0.h:26379", **TLS},
    # Loopback never leaves the host (a local stack, a sidecar).
    {"nats_url": "nats://127.0.0.1:4222", "valkey_url": "redis://localhost:6379/0"},
    {"nats_url": "nats://[::1]:4222", "valkey_sentinels": "127.0.0.1:26379"},
])
def test_production_accepts_tls_and_loopback(settings):
    Settings(env="production", **settings)


def test_development_may_use_plain_text():
    Settings(env="development", nats_url="nats://nats:4222", valkey_url="redis://valkey:6379/0")


def test_a_worker_with_plain_urls_stops_at_start_with_a_clear_error():
    result = subprocess.run(
        [sys.executable, "-m", "natsq.bootstrap"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env=subprocess_env(NATSQ_ENV="production", NATSQ_NATS_URL="nats://nats.example:4222"),
    )
    assert result.returncode != 0
    assert "NATSQ_ENV=production requires TLS to NATS" in result.stderr
