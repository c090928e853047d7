"""The key that seals signing secrets: FIBRIC_SECRET_KEY, or a 0600 file in the data dir made on first use."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fibric import errors, settings, store
from fibric.store import secretbox


def test_the_key_file_is_created_on_first_use_with_mode_0600(tmp_path: Path) -> None:
    state = store.open_store(tmp_path / "data")
    try:
        box = secretbox.for_store(state, settings.Settings())
        key_file = tmp_path / "data" / secretbox.KEY_FILE
        assert not key_file.exists()  # opening the store creates nothing
        sealed = box.seal("whsec_abc", "t_1")
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        # Another process (a new box) reads the same key.
        assert secretbox.for_store(state, settings.Settings()).open(sealed, "t_1") == "whsec_abc"
    finally:
        state.close()
    assert [p.name for p in (tmp_path / "data").iterdir() if p.name.startswith(".secret")] == []


def test_fibric_secret_key_wins_over_the_file(tmp_path: Path) -> None:
    key = secretbox.new_key()
    config = settings.Settings.from_env({"FIBRIC_SECRET_KEY": key})
    state = store.open_store(tmp_path / "data")
    try:
        sealed = secretbox.for_store(state, config).seal("whsec_abc", "t_1")
        assert not (tmp_path / "data" / secretbox.KEY_FILE).exists()
        assert secretbox.SecretBox(key=key).open(sealed, "t_1") == "whsec_abc"
    finally:
        state.close()


@pytest.mark.parametrize("key", ["not base64!", "c2hvcnQ="])
def test_a_bad_key_is_a_clear_error(key: str) -> None:
    with pytest.raises(errors.PermanentError, match="FIBRIC_SECRET_KEY"):
        secretbox.SecretBox(key=key).seal("x", "t_1")


def test_webhook_settings_from_the_environment() -> None:
    config = settings.WebhookSettings.from_env({"FIBRIC_WEBHOOKS_ALLOW_PRIVATE": "1",
                                                "FIBRIC_WEBHOOKS_READ_TIMEOUT": "3"})
    assert config.allow_http_and_private and config.read_timeout_seconds == 3.0
    assert not settings.WebhookSettings.from_env({}).allow_http_and_private
    with pytest.raises(ValueError, match="FIBRIC_WEBHOOKS_ALLOW_PRIVATE"):
        settings.WebhookSettings.from_env({"FIBRIC_WEBHOOKS_ALLOW_PRIVATE": "maybe"})
    assert "sealing-key" not in repr(settings.WebhookSettings(secret_key="sealing-key"))  # never logged
