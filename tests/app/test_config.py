"""Settings: secrets are required and never placeholders; the embedded default needs no setup."""

from __future__ import annotations

import secrets
import stat

import pytest
from pydantic import ValidationError

from app.config import ConfigurationError, Settings
from tests.helpers import TEST_SECRET


def settings(**values) -> Settings:
    return Settings(_env_file=None, **values)


@pytest.mark.parametrize("secret", ["changeme", "secret", "short-but-not-a-placeholder"])
def test_placeholder_or_short_secrets_are_refused(secret):
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        settings(secret_key=secret)


@pytest.mark.parametrize(
    "secret", ["a" * 64, "password" * 6, "0123456789" * 5, "abcabcabcabcabcabcabcabcabcabcabcx"]
)
def test_low_entropy_secrets_are_refused(secret):
    with pytest.raises(ValidationError, match="too predictable"):
        settings(secret_key=secret)


@pytest.mark.parametrize(
    "make", [lambda: secrets.token_urlsafe(32), lambda: secrets.token_hex(16), lambda: TEST_SECRET]
)
def test_random_secrets_are_accepted(make):
    for _ in range(50):
        assert settings(secret_key=make()).secret_key is not None


def test_dev_mode_accepts_a_placeholder_secret():
    assert settings(secret_key="dev", dev_mode=True).require_secret_key() == "dev"


def test_the_web_tier_requires_a_secret_key():
    with pytest.raises(ConfigurationError, match="ALIGNLOOP_SECRET_KEY"):
        settings(secret_key=None).require_secret_key()


def test_environment_variables_use_the_alignloop_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNLOOP_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("ALIGNLOOP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ALIGNLOOP_REDIS_URL", "redis://example:6379/0")
    loaded = Settings(_env_file=None)
    assert loaded.require_secret_key() == TEST_SECRET
    assert loaded.data_dir == tmp_path
    assert not loaded.embedded


def test_the_default_database_is_a_sqlite_file_in_the_data_folder(tmp_path):
    url = settings(data_dir=tmp_path).resolved_database_url
    assert url == f"sqlite:///{tmp_path.resolve() / 'alignloop.db'}"


def test_a_generated_secret_key_is_private_and_stable(tmp_path):
    first = settings(data_dir=tmp_path).with_generated_secret_key()
    second = settings(data_dir=tmp_path).with_generated_secret_key()
    assert first.require_secret_key() == second.require_secret_key()
    assert len(first.require_secret_key()) >= 32
    mode = stat.S_IMODE((tmp_path / "secret_key").stat().st_mode)
    assert mode == 0o600


def test_an_explicit_secret_key_wins_over_the_generated_one(tmp_path):
    explicit = settings(data_dir=tmp_path, secret_key=TEST_SECRET).with_generated_secret_key()
    assert explicit.require_secret_key() == TEST_SECRET
    assert not (tmp_path / "secret_key").exists()
