"""Store N delivered referrals in a bot's data folder, with that bot's own code: `python seed_referrals.py DIR N`.

Run with a build's Python, in its tree (`PYTHONPATH=<tree>`), before its bot starts: the rows are
what that build writes for a delivered referral (the referral, its register entries in the hash
chain, its outbox row, delivered and emptied), so the benchmark can measure a bot holding 10 k
referrals without first driving 10 k referrals through it. All but the newest 1 % are closed
(`data_deleted`, within the last 80 days: nothing for reminders or retention to do at start); the
newest are `sent` in the last hour (not due for a reminder yet). Drafts and Teams messages are not
seeded. Deterministic (fixed seed), so every round starts from the same rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
from pathlib import Path

from bot.config import Settings
from bot.database import open_database, transaction
from bot.outbox import Outbox
from bot.referrals import ReferralState, ReferralStore, SentReferral
from bot.register import ProcessingRegister, RegisterEvent

PROTOCOL_ID = "OR-KG-NOW-OCMW-SGW-2026"
REFERRERS = 200
_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def seed(data_dir: Path, count: int, now: dt.datetime) -> None:
    """Add `count` referrals (one transaction) to the database in `data_dir`."""
    settings = Settings.from_mapping({"BOT_DATA_DIR": str(data_dir)})
    connection = open_database(settings.database_path)
    rng = random.Random(14)  # noqa: S311 - reproducible rows, not secrets  # nosec B311
    referrals, register, outbox = ReferralStore(connection), ProcessingRegister(connection), Outbox(connection)
    try:
        with transaction(connection):
            for number in range(count):
                recent = number >= count * 0.99
                created = now - (dt.timedelta(minutes=rng.uniform(1, 60)) if recent
                                 else dt.timedelta(days=rng.uniform(1, 80)))
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
                referrals.add(referral)
                outbox.enqueue(message_id=referral.message_id, reference=reference, payload=b"seeded", now=created)
                outbox.mark_delivered(referral.message_id, created + dt.timedelta(seconds=1))
                events = [RegisterEvent.CONSENT_CONFIRMED, RegisterEvent.PACKAGE_BUILT, RegisterEvent.QUEUED,
                          RegisterEvent.DELIVERED]
                if not recent:
                    events += [RegisterEvent.ACKNOWLEDGED, RegisterEvent.OUTCOME_RECORDED,
                               RegisterEvent.DELETION_CONFIRMED]
                for event in events:
                    register.append(at=created, event=event, actor_id=referral.referrer_id,
                                    actor_name=referral.referrer_name, protocol_id=PROTOCOL_ID, reference=reference)
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("count", type=int)
    arguments = parser.parse_args()
    seed(arguments.data_dir, arguments.count, dt.datetime.now(dt.UTC))
    sys.stdout.write(f"{arguments.count} referrals stored in {arguments.data_dir}\n")


if __name__ == "__main__":
    main()
