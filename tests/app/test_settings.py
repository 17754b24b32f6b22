from __future__ import annotations

import pytest
from pydantic import ValidationError

from natsq.settings import Settings


def test_defaults_are_the_local_stack(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("NATSQ_"):
            monkeypatch.delenv(name)
    settings = Settings(env="development")
    assert settings.nats_url == "nats://127.0.0.1:4222"
    assert settings.valkey_url == "redis://127.0.0.1:6379/0"
    assert settings.auth is False


def test_every_setting_can_come_from_a_file(monkeypatch, tmp_path):
    (tmp_path / "password").write_text("from-a-file\n")
    (tmp_path / "sentinels").write_text("a:26379,b:26380")
    monkeypatch.setenv("NATSQ_ENV", "development")
    monkeypatch.setenv("NATSQ_VALKEY_PASSWORD_FILE", str(tmp_path / "password"))
    monkeypatch.setenv("NATSQ_VALKEY_SENTINELS_FILE", str(tmp_path / "sentinels"))
    settings = Settings()
    assert settings.valkey_password.get_secret_value() == "from-a-file"
    assert settings.valkey_sentinel_addresses == [("a", 26379), ("b", 26380)]


def test_an_unreadable_file_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("NATSQ_ENV", "development")
    monkeypatch.setenv("NATSQ_NATS_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="NATSQ_NATS_PASSWORD_FILE"):
        Settings()


def test_auth_is_on_outside_development(monkeypatch):
    monkeypatch.delenv("NATSQ_ENV", raising=False)
    # No key needed here: workers hold none; the gateway's TokenVerifier insists on one.
    assert Settings().auth is True
    assert Settings(auth_enabled=False).auth is False


def test_invalid_values_are_refused(monkeypatch):
    monkeypatch.setenv("NATSQ_ENV", "development")
    monkeypatch.setenv("NATSQ_STREAM_REPLICAS", "0")
    with pytest.raises(ValidationError, match="stream_replicas"):
        Settings()
