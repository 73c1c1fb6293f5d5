"""Store N delivered referrals in a bot's data folder, with that bot's own code: `python seed_referrals.py DIR N`.

Run with a build's Python, in its tree (`PYTHONPATH=<tree>`), before its bot starts: the rows are
what that build writes for a delivered referral (the referral, its register entries in the hash
chain, its outbox row, delivered and emptied), so the benchmark can measure a bot holding 10 k
referrals without first driving 10 k referrals through it. All but the newest 1 % are closed
(`data_deleted`, within the last 80 days: nothing for reminders or retention to do at start); the
newest are `sent` in the last hour (not due for a reminder yet). Drafts and Teams messages are not
seeded. Deterministic (fixed seed), so every round starts from the same rows. It speaks the async
SQLAlchemy storage (`bot.database`) of issue 13 and later: a baseline build older than that cannot be
seeded.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from bot.config import Settings
from bot.wiring import open_database_for_command


def module(current: str, flat: str) -> ModuleType:
    """`current` (the packages of issue 15), or `flat` in a build from before them (run in any build's tree)."""
    try:
        return importlib.import_module(current)
    except ModuleNotFoundError:
        return importlib.import_module(flat)


Outbox = module("bot.delivery.mail_outbox", "bot.outbox").Outbox
_sent_referrals = module("bot.core.sent_referrals", "bot.referrals")
ReferralState, ReferralStore, SentReferral = (_sent_referrals.ReferralState, _sent_referrals.ReferralStore,
                                              _sent_referrals.SentReferral)
_register = module("bot.evidence.register", "bot.register")
ProcessingRegister, RegisterEvent = _register.ProcessingRegister, _register.RegisterEvent

PROTOCOL_ID = "OR-KG-NOW-OCMW-SGW-2026"
REFERRERS = 200
_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"


@dataclass(frozen=True)
class _Row:
    referral: SentReferral
    events: tuple[RegisterEvent, ...]


def _rows(count: int, now: dt.datetime) -> Iterator[_Row]:
    rng = random.Random(14)  # noqa: S311 - reproducible rows, not secrets  # nosec B311
    for number in range(count):
        recent = number >= count * 0.99
        created = now - (dt.timedelta(minutes=rng.uniform(1, 60)) if recent else dt.timedelta(days=rng.uniform(1, 80)))
        reference = f"VD-{created:%Y%m%d}-" + "".join(rng.choice(_ALPHABET) for _ in range(6))
        referrer = number % REFERRERS
        referral = SentReferral(
            reference=reference, protocol_id=PROTOCOL_ID, referrer_id=f"aad-seed-{referrer}",
            referrer_name=f"Seed {referrer}", conversation_id=f"a:personal-seed-{referrer}",
            conversation_ref=json.dumps({"conversation": {"id": f"a:personal-seed-{referrer}"}}),
            card_activity_id=None, lang="nl", key_version="local-1",
            message_id=f"<{reference}@opgroeien.be>", created_at=created, queued_at=created,
            sent_at=created + dt.timedelta(seconds=1),
            state=ReferralState.SENT if recent else ReferralState.DATA_DELETED,
        )
        events: tuple[RegisterEvent, ...] = (RegisterEvent.CONSENT_CONFIRMED, RegisterEvent.PACKAGE_BUILT,
                                             RegisterEvent.QUEUED, RegisterEvent.DELIVERED)
        if not recent:
            events += (RegisterEvent.ACKNOWLEDGED, RegisterEvent.OUTCOME_RECORDED, RegisterEvent.DELETION_CONFIRMED)
        yield _Row(referral, events)


def _entry(row: _Row, event: RegisterEvent) -> dict[str, Any]:
    referral = row.referral
    return {"at": referral.created_at, "event": event, "actor_id": referral.referrer_id,
            "actor_name": referral.referrer_name, "protocol_id": PROTOCOL_ID, "reference": referral.reference}


async def _seed(settings: Settings, count: int, now: dt.datetime) -> None:
    """The SQLAlchemy storage: schema migrated as `serve` would, then one transaction."""
    closers: list[Any] = []
    db = await open_database_for_command(settings, closers)
    referrals, register, outbox = ReferralStore(db), ProcessingRegister(db), Outbox(db)
    try:
        async with db.transaction():
            for row in _rows(count, now):
                referral = row.referral
                await referrals.add(referral)
                await outbox.enqueue(message_id=referral.message_id, reference=referral.reference, payload=b"seeded",
                                     now=referral.created_at)
                [item] = await outbox.claim_due(referral.created_at, dt.timedelta(minutes=2), limit=1)
                await outbox.mark_delivered(item, referral.created_at + dt.timedelta(seconds=1))
                for event in row.events:
                    await register.append(**_entry(row, event))
    finally:
        for close in reversed(closers):
            await close()
        await db.close()


def seed(data_dir: Path, count: int, now: dt.datetime) -> None:
    """Add `count` referrals (one transaction) to the database in `data_dir`."""
    asyncio.run(_seed(Settings.from_mapping({"BOT_DATA_DIR": str(data_dir)}), count, now))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("count", type=int)
    arguments = parser.parse_args()
    seed(arguments.data_dir, arguments.count, dt.datetime.now(dt.UTC))
    sys.stdout.write(f"{arguments.count} referrals stored in {arguments.data_dir}\n")


if __name__ == "__main__":
    main()
