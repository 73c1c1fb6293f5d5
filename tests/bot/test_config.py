"""Settings: embedded defaults, strict parsing, errors that say how to fix them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, Settings


def test_embedded_defaults() -> None:
    settings = Settings.from_mapping({})
    assert (settings.host, settings.port, settings.mail_transport) == ("127.0.0.1", 3978, "outbox")
    assert settings.data_dir == Path(".data") and not settings.identity.auth_enabled
    assert settings.draft_ttl.total_seconds() == 1800


def test_values_from_the_environment() -> None:
    settings = Settings.from_mapping(
        {"HOST": "0.0.0.0", "PORT": "8080", "BOT_DATA_DIR": "/tmp/x", "MicrosoftAppId": "abc",  # noqa: S104
         "MicrosoftAppPassword": "very-secret", "LOCAL_ZIP_PASSWORD": "ABCDEFGHJKLMNPQR"}
    )
    assert settings.port == 8080 and settings.identity.auth_enabled
    assert "very-secret" not in repr(settings) and "ABCDEFGHJKLMNPQR" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"MAIL_TRANSPORT": "pigeon"}, "MAIL_TRANSPORT"),
        ({"MAIL_FROM": "nobody"}, "MAIL_FROM"),
        ({"BOT_TIMEZONE": "Mars/Olympus"}, "BOT_TIMEZONE"),
        ({"MicrosoftAppType": "Whatever"}, "MicrosoftAppType"),
        ({"DRAFT_TTL_MINUTES": "0"}, "DRAFT_TTL_MINUTES"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Settings.from_mapping(env)
