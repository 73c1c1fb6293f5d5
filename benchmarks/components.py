"""CPU per call of the package and the mail, in a build's own code: `python components.py ROUNDS REPEAT`.

Run with a build's Python in its tree (`PYTHONPATH=<tree>`), like `seed_referrals.py`, so the same
script times any commit: `build_package` (the AES-256 ZIP: PBKDF2 per entry), the mail as it is
built and queued (`build_referral_mail` and the bytes stored in the outbox), and what the outbox
worker does with the stored bytes before the SMTP conversation (a commit before the mail was
rendered as bytes parses them and aiosmtplib writes them again; after it, only the headers are read
for the envelope). No I/O. Prints one JSON object: figure -> list of µs per call, one per round.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import email
import email.policy
import importlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo


def module(current: str, flat: str) -> ModuleType:
    """`current` (the packages of issue 15), or `flat` in a build from before them (run in any build's tree)."""
    try:
        return importlib.import_module(current)
    except ModuleNotFoundError:
        return importlib.import_module(flat)


mail_message = module("bot.delivery.mail_message", "bot.mail_message")
build_package = module("bot.referral.package", "bot.package").build_package
load_protocol_file = module("bot.core.protocols", "bot.protocols").load_protocol_file
_values = module("bot.core.referral_values", "bot.referral")
ClientDetails, ConsentRecord, ReferralPackageContents, Referrer = (
    _values.ClientDetails, _values.ConsentRecord, _values.ReferralPackageContents, _values.Referrer)

PASSWORD = b"K7M2QX9PLR4TWB8N6VHJ3CZD"
SENDER = "doorverwijzing@opgroeien.be"
BRUSSELS = ZoneInfo("Europe/Brussels")


def _contents() -> ReferralPackageContents:
    now = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)
    protocol = load_protocol_file(Path("infra/protocols/sint-gillis-waas.toml").resolve())
    return ReferralPackageContents(
        reference="VD-20261128-K7M2QX", protocol=protocol,
        client=ClientDetails("Zoë", "Peeters", "Kerkstraat", "12 bus 3", "9170", "Meerdonk", "+32470123456",
                             "zoe@example.be"),
        consent=_consent(now), referrer=Referrer("aad", "An"),
        key_version="local-1", created_at=now,
    )


def _consent(now: dt.datetime) -> ConsentRecord:
    """All points ticked; with a consent text version where the build records one (since issue 12)."""
    versioned = "text_version" in {field.name for field in dataclasses.fields(ConsentRecord)}
    extra: dict[str, Any] = {"text_version": "2026-11-1"} if versioned else {}
    return ConsentRecord(True, True, True, True, True, now, **extra)


def _stored(mail: Any) -> bytes:
    """What the outbox row holds, as each build makes it."""
    if hasattr(mail, "data"):
        return bytes(mail.data)
    return bytes(mail.as_bytes(policy=email.policy.SMTP))


def _worker_side(payload: bytes) -> Callable[[], object]:
    """What the worker does with the row before talking SMTP, as each build does it."""
    outgoing = getattr(mail_message, "OutgoingMail", None)
    if outgoing is not None:
        return lambda: outgoing.from_bytes(payload)
    from aiosmtplib.email import flatten_message

    def parse_and_write_again() -> bytes:
        message = email.message_from_bytes(payload, policy=email.policy.SMTP)
        return bytes(flatten_message(message, utf8=False, cte_type="8bit"))  # what send_message does

    return parse_and_write_again


def _per_call_us(call: Callable[[], object], repeat: int) -> float:
    call()
    started = time.process_time()
    for _ in range(repeat):
        call()
    return (time.process_time() - started) / repeat * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rounds", type=int)
    parser.add_argument("repeat", type=int)
    arguments = parser.parse_args()
    contents = _contents()
    package = build_package(contents, PASSWORD)
    payload = _stored(mail_message.build_referral_mail(contents, package, sender=SENDER, local_tz=BRUSSELS))
    figures: dict[str, Callable[[], object]] = {
        "package_us": lambda: build_package(contents, PASSWORD),
        "mail_queued_us": lambda: _stored(
            mail_message.build_referral_mail(contents, package, sender=SENDER, local_tz=BRUSSELS)
        ),
        "mail_worker_us": _worker_side(payload),
    }
    results = {name: [_per_call_us(call, arguments.repeat) for _ in range(arguments.rounds)]
               for name, call in figures.items()}
    sys.stdout.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
