"""The register as evidence, over HTTP: per event the real actor, purpose, legal basis, the categories
that event moved, the recipient and the consent-text version; events that move no data name none.

The consent text's version is set by the consent card (another change); here `ConsentRecord` is made
with a known version, so the test shows the register carries whatever version the referrer confirmed
from `consent_confirmed` to the package, the queue and the delivery.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from bot.config import Settings
from bot.core.referral_values import LEGAL_BASIS, PURPOSE, RECIPIENT_CATEGORY, UNVERSIONED_CONSENT_TEXT, ConsentRecord
from bot.evidence.register import DELIVERY_ACTOR_ID, DELIVERY_ACTOR_NAME, ProblemKind
from bot.referral import dialogue
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver
from tests.support.card_reading import texts
from tests.support.ocmw_flow import confirm_deletion, correct_phone, link, ocmw_worker, send_and_deliver
from tests.support.referral_flow import CLIENT_FORM, CLIENT_VALUES, MAILBOX, PROTOCOL_ID, reach_review

CONSENT_VERSION = "toestemming-2026-12"
RECIPIENT = f"OCMW Sint-Gillis-Waas <{MAILBOX}>"
ALL_FOUR = "identification:name,contact:address,contact:phone,contact:email"
TRANSFER_EVENTS = ("package_built", "queued", "delivered")


@pytest.fixture(autouse=True)
def consent_text_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every consent the dialogue records confirms version `CONSENT_VERSION` of the consent text."""

    def versioned(*args: Any, **kwargs: Any) -> ConsentRecord:
        return ConsentRecord(*args, **{**kwargs, "text_version": CONSENT_VERSION})

    monkeypatch.setattr(dialogue, "ConsentRecord", versioned)


def _rows(settings: Settings, reference: str) -> list[dict[str, Any]]:
    with sqlite3.connect(settings.database_path) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM register WHERE reference = ? ORDER BY seq",
                                                (reference,))]


def _by_event(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["event"]: row for row in rows}


async def _sent_and_delivered(bot: BotDriver, referrer: TeamsUser, form: dict[str, str] | None = None) -> str:
    draft_id, _ = await reach_review(bot, referrer, form)
    queued = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    [reference] = [word for word in texts(queued).replace('"', " ").split() if word.startswith("VD-")][:1]
    await bot.deliver()
    return reference


async def test_each_step_of_a_referral_says_who_why_on_which_basis_what_to_whom_and_under_which_consent(
    bot: BotDriver, referrer: TeamsUser, settings: Settings
) -> None:
    reference = await _sent_and_delivered(bot, referrer)
    rows = _rows(settings, reference)
    assert [row["event"] for row in rows] == ["referral_started", "consent_confirmed", *TRANSFER_EVENTS]
    for row in rows:
        assert row["purpose"] == PURPOSE and "onderbescherming" in row["purpose"]
        assert row["legal_basis"] == f"{LEGAL_BASIS}; protocol {PROTOCOL_ID}"
        assert row["protocol_id"] == PROTOCOL_ID and row["entry_format"] == "2"
    events = _by_event(rows)
    for event in TRANSFER_EVENTS:
        assert events[event]["data_categories"] == ALL_FOUR, event
        assert events[event]["recipient"] == RECIPIENT, event
        assert events[event]["recipient_category"] == RECIPIENT_CATEGORY, event
        assert events[event]["consent_version"] == CONSENT_VERSION, event
    assert events["consent_confirmed"]["consent_version"] == CONSENT_VERSION
    for event in ("referral_started", "consent_confirmed"):
        assert (events[event]["data_categories"], events[event]["recipient"], events[event]["recipient_category"]) \
            == ("", "", ""), f"{event} moves no data"
    for event in ("referral_started", "consent_confirmed", "package_built", "queued"):
        assert (events[event]["actor_id"], events[event]["actor_name"]) == ("aad-referrer-1", "An Verpleeg"), event
    delivered = events["delivered"]
    assert (delivered["actor_id"], delivered["actor_name"]) == (DELIVERY_ACTOR_ID, DELIVERY_ACTOR_NAME)
    assert "on behalf of aad-referrer-1 (An Verpleeg)" in delivered["detail"]
    assert await bot.services.register.verify() == []


@pytest.mark.parametrize(("left_out", "category"), [("email", "contact:email"), ("phone", "contact:phone")])
async def test_a_contact_item_not_given_is_no_category_of_the_transfer(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, left_out: str, category: str
) -> None:
    reference = await _sent_and_delivered(bot, referrer, {**CLIENT_FORM, left_out: ""})
    events = _by_event(_rows(settings, reference))
    expected = ",".join(name for name in ALL_FOUR.split(",") if name != category)
    assert [events[event]["data_categories"] for event in TRANSFER_EVENTS] == [expected] * 3
    assert (await bot.services.referrals.get(reference)).data_categories == tuple(expected.split(","))  # type: ignore[union-attr]


async def test_the_ocmw_steps_move_no_data_and_a_correction_only_its_item(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, settings: Settings
) -> None:
    await link(bot, ocmw_worker)
    reference, worker = await send_and_deliver(bot, referrer)
    await bot.act(worker, "ack.receive", {"reference": reference})
    correction = await correct_phone(bot, referrer, worker, reference)
    await confirm_deletion(bot, worker, correction)
    first = _rows(settings, reference)
    quiet = [row for row in first if row["event"] not in TRANSFER_EVENTS]
    assert {row["event"] for row in quiet} >= {"acknowledged", "correction_requested", "outcome_recorded",
                                               "deletion_confirmed"}
    for row in quiet:
        assert (row["data_categories"], row["recipient"], row["recipient_category"]) == ("", "", ""), row["event"]
    assert {row["actor_id"] for row in first if row["event"] in {"acknowledged", "outcome_recorded"}} == {"aad-ocmw-1"}
    events = _by_event(_rows(settings, correction))
    for event in TRANSFER_EVENTS:
        assert (events[event]["data_categories"], events[event]["recipient"]) == ("contact:phone", RECIPIENT), event
        assert events[event]["consent_version"] == CONSENT_VERSION, "a correction goes under the family's consent"
    assert events["delivered"]["actor_id"] == DELIVERY_ACTOR_ID
    with sqlite3.connect(settings.database_path) as db:
        everything = db.execute("SELECT event, data_categories, recipient FROM register").fetchall()
    assert {event for event, _, _ in everything} >= {"link_created", "acknowledged", "deletion_confirmed"}
    assert [row for row in everything if row[0] not in TRANSFER_EVENTS and row[1:] != ("", "")] == []
    assert await bot.services.register.verify() == []


async def test_a_failed_delivery_is_the_bots_and_moves_no_data(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.delivery.mail_transport import MailDeliveryError

    async def refuse(_: object) -> None:
        raise MailDeliveryError("550 mailbox unknown", transient=False)

    monkeypatch.setattr(bot.services.transport, "send", refuse)
    reference = await _sent_and_delivered(bot, referrer)
    failed = _by_event(_rows(settings, reference))["delivery_failed"]
    assert (failed["actor_id"], failed["data_categories"], failed["recipient"]) == (DELIVERY_ACTOR_ID, "", "")
    assert "on behalf of aad-referrer-1" in failed["detail"]


@pytest.mark.parametrize(("column", "value"), [
    ("purpose", "iets anders"),
    ("recipient", "OCMW Elders <elders@example.be>"),
    ("consent_version", "toestemming-2020-01"),
    ("data_categories", "identification:name"),
    ("entry_format", "1"),
])
async def test_tampering_with_a_new_field_is_found(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, column: str, value: str
) -> None:
    reference = await _sent_and_delivered(bot, referrer)
    delivered = _by_event(_rows(settings, reference))["delivered"]
    with sqlite3.connect(settings.database_path) as db:
        db.execute(f"UPDATE register SET {column} = ? WHERE seq = ?", (value, delivered["seq"]))  # noqa: S608
    problems = await bot.services.register.verify()
    assert [(problem.seq, problem.kind) for problem in problems] == [(delivered["seq"], ProblemKind.ALTERED)]


async def test_the_register_holds_no_client_value(bot: BotDriver, referrer: TeamsUser, settings: Settings) -> None:
    await _sent_and_delivered(bot, referrer)
    with sqlite3.connect(settings.database_path) as db:
        everything = " ".join(str(value) for row in db.execute("SELECT * FROM register") for value in row)
        referrals = " ".join(str(value) for row in db.execute("SELECT * FROM referrals") for value in row)
    assert [value for value in CLIENT_VALUES if value in everything or value in referrals] == []


async def test_a_referral_queued_before_categories_were_recorded_says_so_when_delivered(
    bot: BotDriver, referrer: TeamsUser, settings: Settings
) -> None:
    """Queued by the previous version (no categories, no recipient on its record), delivered by this one."""
    draft_id, _ = await reach_review(bot, referrer, {**CLIENT_FORM, "email": ""})
    queued = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    [reference] = [word for word in texts(queued).replace('"', " ").split() if word.startswith("VD-")][:1]
    with sqlite3.connect(settings.database_path) as db:
        db.execute("UPDATE referrals SET data_categories = NULL, recipient = '', consent_version = ''"
                   " WHERE reference = ?", (reference,))
    await bot.deliver()
    delivered = _by_event(_rows(settings, reference))["delivered"]
    assert (delivered["data_categories"], delivered["recipient"]) == (ALL_FOUR, RECIPIENT)
    assert "categories not recorded when it was queued: the protocol's maximum" in delivered["detail"]
    # The consent texts it was confirmed under: those a consent stored without a version means (as for drafts).
    assert delivered["consent_version"] == UNVERSIONED_CONSENT_TEXT


async def test_a_correction_of_a_referral_queued_before_consent_versions_names_those_texts(
    bot: BotDriver, referrer: TeamsUser, settings: Settings
) -> None:
    await link(bot, ocmw_worker())
    reference, worker = await send_and_deliver(bot, referrer)
    with sqlite3.connect(settings.database_path) as db:  # as the previous version left it
        db.execute("UPDATE referrals SET consent_version = '' WHERE reference = ?", (reference,))
    await bot.act(worker, "ack.receive", {"reference": reference})
    version = await correct_phone(bot, referrer, worker, reference)
    entries = _by_event(_rows(settings, version))
    assert {event: entries[event]["consent_version"] for event in ("package_built", "queued", "delivered")} == \
        dict.fromkeys(("package_built", "queued", "delivered"), UNVERSIONED_CONSENT_TEXT)
