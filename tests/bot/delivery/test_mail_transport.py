"""The outbox folder transport: one private `.eml` per Message-ID, removable when its data must go."""

from __future__ import annotations

import stat
from pathlib import Path

from bot.delivery.mail_transport import OutboxFolderTransport, SentCopies
from tests.support.sample_referral import sample_referral


async def test_a_sent_mail_is_one_private_file_and_its_copy_can_be_removed(tmp_path: Path) -> None:
    transport = OutboxFolderTransport(tmp_path / "outbox")
    first, other = sample_referral("VD-20261128-K7M2QX"), sample_referral("VD-20261128-K7M2QX-2")
    await transport.send(first.message)
    await transport.send(first.message)  # a resend replaces the file
    await transport.send(other.message)
    (tmp_path / "outbox" / "VD-20261128-K7M2QX@kindengezin.be.tmp").write_bytes(b"half written before a crash")
    names = sorted(path.name for path in (tmp_path / "outbox").iterdir())
    assert names == ["VD-20261128-K7M2QX-2@kindengezin.be.eml", "VD-20261128-K7M2QX@kindengezin.be.eml",
                     "VD-20261128-K7M2QX@kindengezin.be.tmp"]
    assert {stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "outbox").glob("*.eml")} == {0o600}

    assert isinstance(transport, SentCopies)
    transport.remove_copy(str(first.message["Message-ID"]))
    transport.remove_copy(str(first.message["Message-ID"]))  # gone already: nothing to do

    assert [path.name for path in (tmp_path / "outbox").iterdir()] == ["VD-20261128-K7M2QX-2@kindengezin.be.eml"]
