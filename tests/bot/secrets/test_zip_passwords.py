"""The embedded password provider: generated once, private, refused when 7-Zip could not use it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Settings
from bot.core.protocols import load_registry
from bot.secrets.zip_passwords import PASSWORD_ALPHABET, LocalZipPasswordProvider, ZipPasswordError, format_for_reading

PROTOCOL = load_registry(Settings().protocols_dir).all()[0]


async def test_a_generated_password_is_kept_private_and_reused(tmp_path: Path) -> None:
    provider = LocalZipPasswordProvider(configured=None, password_file=tmp_path / "pw")
    password = await provider.password_for(PROTOCOL)
    assert len(password.value) == 24 and set(password.value.decode()) <= set(PASSWORD_ALPHABET)
    assert (tmp_path / "pw").stat().st_mode & 0o777 == 0o600
    again = await LocalZipPasswordProvider(configured=None, password_file=tmp_path / "pw").password_for(PROTOCOL)
    assert again == password
    assert password.value.decode() not in repr(password) and password.value.decode() not in password.version


async def test_a_configured_password_wins(tmp_path: Path) -> None:
    provider = LocalZipPasswordProvider(configured="ABCDEFGHJKLMNPQRST", password_file=tmp_path / "pw")
    assert (await provider.password_for(PROTOCOL)).value == b"ABCDEFGHJKLMNPQRST"
    assert not (tmp_path / "pw").exists()


@pytest.mark.parametrize("bad", ["short", "wachtwoord-met-é-erin", "x" * 100, "with spaces inside it"])
def test_passwords_7zip_cannot_use_are_refused_without_showing_them(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ZipPasswordError) as raised:
        LocalZipPasswordProvider(configured=bad, password_file=tmp_path / "pw")
    assert bad not in str(raised.value) and "LOCAL_ZIP_PASSWORD" in str(raised.value)


def test_reading_format_groups_of_four() -> None:
    assert format_for_reading("ABCDEFGHJKLM") == "ABCD EFGH JKLM"
