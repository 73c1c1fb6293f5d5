"""Who may refer under which protocol (issue 12, point 2), over real HTTP.

The protocol file names its sending teams (`[[sender.teams]]`) by Entra object id, security group
and Teams team; group and team membership comes from a local Microsoft Graph stand-in
(`checkMemberGroups`) through the bot's real HTTP client. The package is opened with the real 7-Zip
to read the sending team it names.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import email
import email.policy
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import cards
from bot.app import create_app
from bot.cli.main import main
from bot.config import Settings
from bot.core.protocols import ProtocolFileError, ProtocolFolder, load_protocol_file
from bot.referral.drafts import DraftState
from bot.referral.graph_membership import GraphMembershipChecker
from bot.referral.referrers import MAX_GROUPS_PER_REQUEST, MEMBERSHIP_WAIT_SECONDS, ReferrerAccess
from tests.bot.test_config import PRODUCTION
from tests.conftest import REPLIES_SHOWN_AT_ONCE, ZIP_PASSWORD
from tests.support import sevenzip
from tests.support.activities import TeamsUser
from tests.support.bot_process import PROJECT_ROOT
from tests.support.bot_server import BotDriver, running_bot, running_connector
from tests.support.card_reading import actions, draft_id_of, texts
from tests.support.clock import ManualClock
from tests.support.graph_standin import GraphStandIn, StaticTokenCredential, graph_standin, managed_identity_standin
from tests.support.ocmw_flow import correct_phone, link, ocmw_worker, referred_and_delivered
from tests.support.referral_flow import CONSENT_ALL, PROTOCOL_ID, reach_review
from tests.support.smtp_server import free_port

SHIPPED = Settings().protocols_dir / "sint-gillis-waas.toml"
LISTED = "5c0ffee0-0000-4000-8000-00000000a001"  # listed by object id in the first entry
MEMBER = "5c0ffee0-0000-4000-8000-00000000a002"  # in the second entry's group or team, says Graph
STRANGER = "5c0ffee0-0000-4000-8000-00000000a003"  # in no entry, in no group
COLLEAGUE = "5c0ffee0-0000-4000-8000-00000000a004"  # in the second entry's team too, when a test says so
GROUP = "6a7b8c9d-0000-4000-8000-0000000000b1"
TEAM = "6a7b8c9d-0000-4000-8000-0000000000c1"
TEAM_BY_OBJECT = "Kind en Gezin team Sint-Niklaas"
TEAM_BY_GROUP = "Kind en Gezin team Beveren"
ENTRIES = f"""
[[sender.teams]]
name = "{TEAM_BY_OBJECT}"
object_ids = ["{LISTED.upper()}"]

[[sender.teams]]
name = "{TEAM_BY_GROUP}"
group_ids = ["{GROUP}"]
team_ids = ["{TEAM}"]
"""
CACHE = dt.timedelta(minutes=10)


def protocol_text(entries: str) -> str:
    """The shipped protocol with `entries` in its `[sender]` table."""
    lines = SHIPPED.read_text(encoding="utf-8").splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("dpo = ") and "opgroeien" in line)
    return "\n".join([*lines[:at + 1], entries, *lines[at + 1:]]) + "\n"


def protocols_folder(tmp_path: Path, entries: str = ENTRIES) -> Path:
    folder = tmp_path / "protocols"
    folder.mkdir(exist_ok=True)
    (folder / "sint-gillis-waas.toml").write_text(protocol_text(entries), encoding="utf-8")
    return folder


def user(object_id: str, name: str = "Nora Verpleeg") -> TeamsUser:
    return TeamsUser(aad_object_id=object_id, name=name, conversation_id=f"a:personal-{object_id[-4:]}")


@pytest.fixture
def listed_settings(tmp_path: Path) -> Settings:
    return Settings.from_mapping({
        **REPLIES_SHOWN_AT_ONCE,
        "BOT_DATA_DIR": str(tmp_path / "data"),
        "PROTOCOLS_DIR": str(protocols_folder(tmp_path)),
        "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
        "RATE_LIMIT_STARTS_PER_HOUR": "1000",
        "RATE_LIMIT_ACTIONS_PER_MINUTE": "1000",
    })


@pytest.fixture
async def graph() -> AsyncIterator[GraphStandIn]:
    async with graph_standin() as standin:
        yield standin


@pytest.fixture
async def checker(graph: GraphStandIn) -> AsyncIterator[GraphMembershipChecker]:
    async with StaticTokenCredential(graph.token) as credential:
        membership = GraphMembershipChecker(credential, base_url=graph.base_url, ca_file=graph.ca_path)
        try:
            yield membership
        finally:
            await membership.close()


@pytest.fixture
async def bot(listed_settings: Settings, clock: ManualClock, checker: GraphMembershipChecker) -> AsyncIterator[
        BotDriver]:
    async with running_bot(create_app(listed_settings, clock=clock, run_worker=False, membership=checker)) as driver:
        yield driver


def reference_in(card: dict[str, Any]) -> str:
    [reference] = {str(found) for found in re.findall(r"VD-[0-9]{8}-[A-Z0-9]{6}", texts(card))}
    return reference


def mailed(settings: Settings, reference: str) -> email.message.EmailMessage:
    [eml] = settings.outbox_dir.glob(f"{reference}@*.eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def package_files(message: email.message.EmailMessage, unzip_to: Path) -> dict[str, str]:
    """The files in the mail's AES-256 ZIP, opened by the real 7-Zip with the protocol's password."""
    [attachment] = list(message.iter_attachments())
    result = sevenzip.extract(attachment.get_content(), ZIP_PASSWORD, unzip_to)
    assert result.returncode == 0, result.stdout + result.stderr
    return {path.name: path.read_text(encoding="utf-8") for path in unzip_to.iterdir()}


async def send(bot: BotDriver, referrer: TeamsUser) -> str:
    """Consent, data, review and send; returns the reference once the mail is delivered."""
    draft_id, _ = await reach_review(bot, referrer)
    queued = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert "referral.send" not in actions(queued), queued
    assert await bot.deliver() == 1
    return reference_in(queued)


def count_drafts(settings: Settings) -> int:
    with sqlite3.connect(settings.database_path) as db:
        return int(db.execute("SELECT COUNT(*) FROM drafts").fetchone()[0])


def problem_title(problem: str, **params: str) -> str:
    return cards.text("nl", f"problem.{problem}.title", **params)


async def test_a_listed_object_id_refers_and_the_package_and_mail_name_its_team(
    bot: BotDriver, graph: GraphStandIn, listed_settings: Settings, tmp_path: Path
) -> None:
    reference = await send(bot, user(LISTED))

    message = mailed(listed_settings, reference)
    inside = package_files(message, tmp_path / "open")
    assert json.loads(inside["doorverwijzing.json"])["sender"] == {"organisation": "Opgroeien regie",
                                                                   "team": TEAM_BY_OBJECT}
    assert f"Opgroeien regie, {TEAM_BY_OBJECT}" in inside["doorverwijzing.txt"]
    body = message.get_body()
    assert body is not None and TEAM_BY_OBJECT in body.get_content() and TEAM_BY_OBJECT in message["Subject"]
    referral = await bot.services.referrals.get(reference)
    assert referral is not None and referral.sender_team == TEAM_BY_OBJECT
    assert graph.membership_checks == [], "an object id needs no directory"


@pytest.mark.parametrize("membership", [GROUP, TEAM], ids=["security group", "teams team"])
async def test_a_member_of_a_listed_group_or_team_refers_as_that_team_and_the_directory_is_asked_once(
    bot: BotDriver, graph: GraphStandIn, listed_settings: Settings, tmp_path: Path, membership: str
) -> None:
    graph.memberships[MEMBER] = {membership}

    reference = await send(bot, user(MEMBER))

    inside = package_files(mailed(listed_settings, reference), tmp_path / "open")
    assert json.loads(inside["doorverwijzing.json"])["sender"]["team"] == TEAM_BY_GROUP
    [check] = graph.membership_checks  # start, consent and send: one lookup, kept for the rest
    assert check.path == f"/v1.0/users/{MEMBER}/checkMemberGroups"
    assert check.authorization == f"Bearer {graph.token}"
    assert sorted(check.body["groupIds"]) == sorted([GROUP, TEAM]) and not graph.problems


async def test_someone_no_protocol_lists_gets_the_polite_refusal_and_no_draft(
    bot: BotDriver, listed_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = user(STRANGER, "Otto Elders")
    caplog.set_level(logging.WARNING)

    [posted] = await bot.say(stranger, "nieuw")
    clicked = await bot.act(stranger, "referral.start", {})

    for card in (posted["attachments"][0]["content"], clicked):
        assert "referral.consent" not in actions(card)
        assert problem_title("not_listed") in texts(card)
        assert "teamverantwoordelijke" in texts(card) and "functioneel beheerder" in texts(card)
    assert count_drafts(listed_settings) == 0
    assert "no protocol in force lists this user" in caplog.text
    forged = await bot.act(stranger, "referral.consent", {"draftId": "made-up", "ocmw": PROTOCOL_ID, **CONSENT_ALL})
    assert "referral.details" not in actions(forged)


async def test_only_the_protocols_that_list_the_user_are_offered_and_can_be_chosen(
    listed_settings: Settings, clock: ManualClock, checker: GraphMembershipChecker
) -> None:
    """A second OCMW whose protocol lists someone else: not offered, and a forged choice of it does not pass."""
    other = protocol_text(f'\n[[sender.teams]]\nname = "Ander team"\nobject_ids = ["{STRANGER}"]\n')
    for old, new in (("OR-KG-NOW-OCMW-SGW-2026", "OR-KG-WAAS-OCMW-BEV-2026"), ("Sint-Gillis-Waas", "Beveren"),
                     ("sint-gillis-waas", "beveren"), ('"9170"', '"9120"')):
        other = other.replace(old, new)
    (listed_settings.protocols_dir / "beveren.toml").write_text(other, encoding="utf-8")
    async with running_bot(create_app(listed_settings, clock=clock, run_worker=False, membership=checker)) as bot:
        listed = user(LISTED)
        consent = await bot.act(listed, "referral.start", {})
        assert "OCMW Sint-Gillis-Waas" in texts(consent) and "OCMW Beveren" not in texts(consent)
        draft_id = draft_id_of(consent)

        forged = await bot.act(listed, "referral.consent",
                               {"draftId": draft_id, "ocmw": "OR-KG-WAAS-OCMW-BEV-2026", **CONSENT_ALL})

        assert "referral.details" not in actions(forged) and "referral.consent" in actions(forged)
        draft = await bot.services.drafts.get(draft_id)
        assert draft is not None and draft.state == DraftState.CONSENT and draft.protocol_id is None
        stranger = await bot.act(user(STRANGER), "referral.start", {})
        assert "OCMW Beveren" in texts(stranger) and "OCMW Sint-Gillis-Waas" not in texts(stranger)


@pytest.mark.parametrize("status", [503, 429, 403, 401])
async def test_when_graph_cannot_answer_nothing_is_allowed_and_the_card_says_try_again(
    bot: BotDriver, graph: GraphStandIn, listed_settings: Settings, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    graph.memberships[MEMBER] = {GROUP}
    graph.answer_next(status)
    member = user(MEMBER)

    [posted] = await bot.say(member, "nieuw")

    card = posted["attachments"][0]["content"]
    assert problem_title("membership_unavailable") in texts(card) and "probeer zo opnieuw" in texts(card).lower()
    assert "referral.consent" not in actions(card) and "referral.start" in actions(card)
    assert count_drafts(listed_settings) == 0
    assert f"Graph refused checkMemberGroups: {status}" in caplog.text
    # A failure is not kept: the next try asks again, and Graph is back.
    assert "referral.consent" in actions(await bot.act(member, "referral.start", {}))
    assert len(graph.membership_checks) == 2


async def test_a_slow_directory_is_cut_off_in_time_and_refused(bot: BotDriver, graph: GraphStandIn) -> None:
    graph.memberships[MEMBER] = {GROUP}
    graph.membership_delay = MEMBERSHIP_WAIT_SECONDS + 5

    started = time.monotonic()
    card = await bot.act(user(MEMBER), "referral.start", {})

    assert time.monotonic() - started < MEMBERSHIP_WAIT_SECONDS + 1.5, "Teams wants its answer within ~5 s"
    assert problem_title("membership_unavailable") in texts(card)


async def test_graph_unreachable_is_refused_with_the_retry_card(
    listed_settings: Settings, clock: ManualClock, graph: GraphStandIn
) -> None:
    async with StaticTokenCredential(graph.token) as credential:
        nowhere = GraphMembershipChecker(credential, base_url="https://127.0.0.1:9", ca_file=graph.ca_path)
        app = create_app(listed_settings, clock=clock, run_worker=False, membership=nowhere)
        async with running_bot(app) as bot:
            card = await bot.act(user(MEMBER), "referral.start", {})
        await nowhere.close()
    assert problem_title("membership_unavailable") in texts(card)


async def test_the_answer_is_kept_for_the_cache_time_then_asked_again(
    bot: BotDriver, graph: GraphStandIn, clock: ManualClock
) -> None:
    graph.memberships[MEMBER] = {GROUP}
    member = user(MEMBER)
    for _ in range(3):
        assert "referral.consent" in actions(await bot.act(member, "referral.start", {}))
    assert len(graph.membership_checks) == 1

    clock.advance(CACHE + dt.timedelta(seconds=1))
    assert "referral.consent" in actions(await bot.act(member, "referral.start", {}))
    assert len(graph.membership_checks) == 2


async def test_a_member_removed_mid_referral_is_stopped_at_send_and_the_data_wiped(
    bot: BotDriver, graph: GraphStandIn, clock: ManualClock, listed_settings: Settings
) -> None:
    graph.memberships[MEMBER] = {GROUP}
    member = user(MEMBER)
    draft_id, _ = await reach_review(bot, member)
    reference = (await bot.services.drafts.get(draft_id)).reference  # type: ignore[union-attr]
    graph.memberships[MEMBER] = set()  # the team lead takes the user out of the group
    clock.advance(CACHE + dt.timedelta(seconds=1))  # the kept answer runs out (the draft lives 30 minutes)

    card = await bot.act(member, "referral.send", {"draftId": draft_id})

    assert problem_title("no_longer_listed", ocmw="OCMW Sint-Gillis-Waas") in texts(card)
    assert "referral.send" not in actions(card) and "gewist" in texts(card) and reference in texts(card)
    assert await bot.deliver() == 0 and not list(listed_settings.outbox_dir.glob("*.eml"))
    draft = await bot.services.drafts.get(draft_id)
    assert draft is not None and draft.state == DraftState.CANCELLED and draft.details is None
    with sqlite3.connect(listed_settings.database_path) as db:
        event, detail = db.execute("SELECT event, detail FROM register ORDER BY seq DESC LIMIT 1").fetchone()
    assert event == "cancelled" and TEAM_BY_GROUP in detail and "nothing sent" in detail
    assert len(graph.membership_checks) == 2
    again = await bot.act(member, "referral.send", {"draftId": draft_id})
    assert "referral.send" not in actions(again) and reference in texts(again)


async def test_graph_down_at_send_keeps_the_draft_and_the_retry_sends_as_the_same_team(
    bot: BotDriver, graph: GraphStandIn, clock: ManualClock, listed_settings: Settings, tmp_path: Path
) -> None:
    graph.memberships[MEMBER] = {GROUP}
    member = user(MEMBER)
    draft_id, review = await reach_review(bot, member)
    clock.advance(CACHE + dt.timedelta(seconds=1))
    graph.answer_next(503)

    card = await bot.act(member, "referral.send", actions(review)["referral.send"])

    assert problem_title("membership_unavailable") in texts(card)
    assert actions(card)["referral.send"] == actions(review)["referral.send"], "a retry of the data shown"
    draft = await bot.services.drafts.get(draft_id)
    assert draft is not None and draft.state == DraftState.REVIEW and draft.details is not None
    queued = await bot.act(member, "referral.send", actions(card)["referral.send"])
    assert await bot.deliver() == 1
    inside = package_files(mailed(listed_settings, reference_in(queued)), tmp_path / "open")
    assert json.loads(inside["doorverwijzing.json"])["sender"]["team"] == TEAM_BY_GROUP


async def test_the_team_chosen_at_consent_is_the_one_sent_even_when_the_file_changes_its_order(
    bot: BotDriver, graph: GraphStandIn, listed_settings: Settings, tmp_path: Path
) -> None:
    """In both entries: the object id decides; the draft keeps that team through a reordered file."""
    graph.memberships[LISTED] = {GROUP}
    listed = user(LISTED)
    draft_id, _ = await reach_review(bot, listed)
    draft = await bot.services.drafts.get(draft_id)
    assert draft is not None and draft.sender_team == TEAM_BY_OBJECT
    queued = await bot.act(listed, "referral.send", {"draftId": draft_id})
    await bot.deliver()
    inside = package_files(mailed(listed_settings, reference_in(queued)), tmp_path / "open")
    assert json.loads(inside["doorverwijzing.json"])["sender"]["team"] == TEAM_BY_OBJECT


async def test_a_correction_names_the_team_of_the_referral_it_corrects(
    bot: BotDriver, listed_settings: Settings, tmp_path: Path
) -> None:
    referrer = user(LISTED)
    await link(bot, ocmw_worker())
    reference, card_id = await referred_and_delivered(bot, referrer)
    worker = ocmw_worker().in_thread(card_id)
    ocmw_card = await bot.act(worker, "ack.receive", {"reference": reference})
    assert TEAM_BY_OBJECT in texts(ocmw_card)

    corrected = await correct_phone(bot, referrer, worker, reference)

    version = await bot.services.referrals.get(corrected)
    assert version is not None and version.sender_team == TEAM_BY_OBJECT
    message = mailed(listed_settings, corrected)
    assert TEAM_BY_OBJECT in message["Subject"]
    assert f"Van: {TEAM_BY_OBJECT}" in package_files(message, tmp_path / "c")["correctie.txt"]


def corrections_by(settings: Settings, user_id: str) -> int:
    with sqlite3.connect(settings.database_path) as db:
        return int(db.execute("SELECT COUNT(*) FROM corrections WHERE requested_by_id = :id",
                              {"id": user_id}).fetchone()[0])


async def test_someone_no_protocol_lists_can_neither_correct_a_referral_nor_withdraw_its_consent(
    bot: BotDriver, listed_settings: Settings
) -> None:
    """A correction is a new transfer of the family's data, named as the referral's team; a withdrawal asks
    the OCMW to delete it. A tenant user on no list knowing the reference is refused both, clicked or typed."""
    await link(bot, ocmw_worker())
    referrer = user(LISTED)
    reference, _ = await referred_and_delivered(bot, referrer)
    opened = await bot.act(referrer, "correction.open", {"reference": reference, "item": "phone"})
    correction_id = actions(opened)["correction.submit"]["correctionId"]
    stranger = user(STRANGER, "Otto Elders")

    corrections = [
        await bot.banner(stranger, "correction.start", {"reference": reference}),
        await bot.banner(stranger, "correction.open", {"reference": reference, "item": "phone"}),
        await bot.banner(stranger, "correction.submit", {"correctionId": correction_id, "phone": "0470 99 88 77"}),
        (await bot.say(stranger, f"verbeter {reference}"))[0]["text"],
    ]
    withdrawals = [
        await bot.banner(stranger, "consent.withdraw", {"reference": reference}),
        await bot.banner(stranger, "consent.withdraw", {"reference": reference, "confirmed": "true"}),
        (await bot.say(stranger, f"intrekken {reference}"))[0]["text"],
    ]

    for refusal in corrections:
        assert refusal.startswith(problem_title("not_listed_for_team", team=TEAM_BY_OBJECT)), refusal
    for refusal in withdrawals:
        assert refusal.startswith(problem_title("not_listed")), refusal
    assert await bot.deliver() == 0 and await bot.services.referrals.get(f"{reference}-2") is None
    assert (await bot.services.referrals.get(reference)).state == "sent"  # type: ignore[union-attr]
    assert corrections_by(listed_settings, STRANGER) == 0


async def test_a_correction_is_for_its_referrals_team_a_withdrawal_for_any_team_of_the_protocol(
    bot: BotDriver, graph: GraphStandIn, listed_settings: Settings, tmp_path: Path
) -> None:
    """A colleague of the same team sends the correction (named as that team); one of another team listed
    under the same protocol may not send it, but may record the withdrawal the parents told them."""
    graph.memberships[MEMBER] = {GROUP}
    graph.memberships[COLLEAGUE] = {TEAM}
    await link(bot, ocmw_worker())
    by_group, _ = await referred_and_delivered(bot, user(MEMBER))
    by_object, _ = await referred_and_delivered(bot, user(LISTED))
    colleague = user(COLLEAGUE, "Carla Collega")

    opened = await bot.act(colleague, "correction.open", {"reference": by_group, "item": "phone"})
    queued = await bot.act(colleague, "correction.submit", {
        "correctionId": actions(opened)["correction.submit"]["correctionId"], "phone": "0470 99 88 77"})
    assert f"{by_group}-2" in texts(queued) and await bot.deliver() == 1
    message = mailed(listed_settings, f"{by_group}-2")
    assert f"Van: {TEAM_BY_GROUP}" in package_files(message, tmp_path / "c")["correctie.txt"]

    refused = await bot.banner(colleague, "correction.open", {"reference": by_object, "item": "phone"})
    assert refused.startswith(problem_title("not_listed_for_team", team=TEAM_BY_OBJECT))
    assert TEAM_BY_OBJECT in refused and "OCMW Sint-Gillis-Waas" in refused
    await bot.act_confirmed(colleague, "consent.withdraw", {"reference": by_object})
    assert (await bot.services.referrals.get(by_object)).state == "consent_withdrawn"  # type: ignore[union-attr]


async def test_a_colleague_taken_off_the_list_cannot_correct_and_graph_down_asks_to_try_again(
    bot: BotDriver, graph: GraphStandIn, clock: ManualClock
) -> None:
    graph.memberships[MEMBER] = {GROUP}
    member = user(MEMBER)
    await link(bot, ocmw_worker())
    reference, _ = await referred_and_delivered(bot, member)
    opened = await bot.act(member, "correction.open", {"reference": reference, "item": "phone"})
    submit = {"correctionId": actions(opened)["correction.submit"]["correctionId"], "phone": "0470 99 88 77"}
    clock.advance(CACHE + dt.timedelta(seconds=1))  # the kept answer runs out

    graph.answer_next(503, count=2)  # one lookup for each click: a failure is not kept
    down = [await bot.banner(member, "correction.submit", submit),
            await bot.banner(member, "consent.withdraw", {"reference": reference, "confirmed": "true"})]
    graph.memberships[MEMBER] = set()  # the team lead takes the user out of the group
    clock.advance(CACHE + dt.timedelta(seconds=1))
    taken_off = await bot.banner(member, "correction.submit", submit)
    withdrawal = await bot.banner(member, "consent.withdraw", {"reference": reference, "confirmed": "true"})

    for banner in down:
        assert banner.startswith(problem_title("membership_unavailable")) and "probeer" in banner.lower(), banner
    assert taken_off.startswith(problem_title("not_listed_for_team", team=TEAM_BY_GROUP))
    assert withdrawal.startswith(problem_title("not_listed"))
    assert await bot.deliver() == 0 and await bot.services.referrals.get(f"{reference}-2") is None
    assert (await bot.services.referrals.get(reference)).state == "sent"  # type: ignore[union-attr]


async def test_first_match_object_ids_first_then_groups_in_file_order(
    checker: GraphMembershipChecker, graph: GraphStandIn, tmp_path: Path, clock: ManualClock
) -> None:
    groups = [f"6a7b8c9d-0000-4000-8000-{number:012x}" for number in range(1, 26)]
    entries = f"""
[[sender.teams]]
name = "Eerste"
group_ids = {json.dumps(groups[:24])}

[[sender.teams]]
name = "Tweede"
object_ids = ["{LISTED}"]

[[sender.teams]]
name = "Derde"
group_ids = ["{groups[24]}"]
"""
    protocol = load_protocol_file(protocols_folder(tmp_path, entries) / "sint-gillis-waas.toml")
    access = ReferrerAccess(checker, clock=clock)
    graph.memberships[LISTED] = {groups[0]}
    graph.memberships[MEMBER] = {groups[3], groups[24]}

    assert [a.team for a in await access.allowed(LISTED, [protocol])] == ["Tweede"]
    assert graph.membership_checks == [], "listed by object id: no lookup"
    assert [a.team for a in await access.allowed(MEMBER, [protocol])] == ["Eerste"]
    assert [len(c.body["groupIds"]) for c in graph.membership_checks] == [MAX_GROUPS_PER_REQUEST, 5]
    assert await access.allowed(STRANGER, [protocol]) == []
    assert await access.allowed("not-an-entra-id", [protocol]) == []
    assert len(graph.membership_checks) == 4, "a user without an Entra object id is looked up nowhere"
    assert await access.confirm(MEMBER, protocol, "Derde") == "Derde"
    assert await access.confirm(MEMBER, protocol, "Tweede") is None
    assert await access.confirm(MEMBER, protocol, "Verdwenen") is None


async def test_production_refuses_a_protocol_file_without_referrer_lists(
    settings: Settings, listed_settings: Settings, clock: ManualClock, checker: GraphMembershipChecker
) -> None:
    production = dataclasses.replace(settings, environment="production")  # the shipped file: no lists
    with pytest.raises(ProtocolFileError) as refused:
        create_app(production, clock=clock, run_worker=False)
    assert refused.value.path == SHIPPED and refused.value.field == "sender.teams"
    assert "sint-gillis-waas.toml" in str(refused.value) and "BOT_ENV=production" in str(refused.value)

    listed = dataclasses.replace(listed_settings, environment="production")
    async with running_bot(create_app(listed, clock=clock, run_worker=False, membership=checker)) as bot:
        assert "referral.consent" in actions(await bot.act(user(LISTED), "referral.start", {}))


def test_in_development_a_file_without_lists_lets_anyone_refer_as_its_sender_team(settings: Settings) -> None:
    folder = ProtocolFolder(settings.protocols_dir)
    [protocol] = folder.registry.all()
    assert protocol.sender_teams == () and protocol.sender.team == "Kind en Gezin team Noord-Oost Waasland"


def test_a_running_production_bot_keeps_its_lists_when_a_file_loses_them(tmp_path: Path) -> None:
    folder = protocols_folder(tmp_path)
    running = ProtocolFolder(folder, require_referrers=True)
    (folder / "sint-gillis-waas.toml").write_text(SHIPPED.read_text(encoding="utf-8"), encoding="utf-8")

    assert running.reload_if_changed() is False
    assert running.problem is not None and running.problem.field == "sender.teams"
    [protocol] = running.registry.all()
    assert [team.name for team in protocol.sender_teams] == [TEAM_BY_OBJECT, TEAM_BY_GROUP]


def test_protocols_check_in_production_names_the_file_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("bot.cli.main.configure_logging", lambda *_, **__: None)  # pytest keeps the log

    def check(directory: Path) -> tuple[int, str]:
        status = main(["protocols", "check", "--dir", str(directory)])
        return status, capsys.readouterr().out

    status, out = check(SHIPPED.parent)
    assert status == 0 and "referrers: anyone the REFERRER_* settings allow" in out and "development only" in out
    status, out = check(protocols_folder(tmp_path))
    assert status == 0 and f"'{TEAM_BY_GROUP}' (0 users, 1 groups, 1 teams)" in out
    assert main(["protocols", "check", "--production", "--dir", str(SHIPPED.parent)]) == 1
    assert "field 'sender.teams'" in capsys.readouterr().out, "--production checks before a deployment"
    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name, value)
    status, out = check(SHIPPED.parent)
    assert status == 1 and out.startswith("FAIL") and "sint-gillis-waas.toml: field 'sender.teams'" in out
    assert check(protocols_folder(tmp_path))[0] == 0


async def test_the_real_process_asks_graph_with_its_managed_identity(tmp_path: Path, graph: GraphStandIn) -> None:
    """`python -m bot serve` as deployed: DefaultAzureCredential's token (managed identity) on checkMemberGroups."""
    graph.memberships[MEMBER] = {TEAM}
    async with managed_identity_standin(token=graph.token) as identity, running_connector() as (connector, service):
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_"))},
            "BOT_DATA_DIR": str(tmp_path / "data"), "PORT": str(port), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
            "PROTOCOLS_DIR": str(protocols_folder(tmp_path)), "GRAPH_BASE_URL": graph.base_url,
            "IDENTITY_ENDPOINT": identity.endpoint, "IDENTITY_HEADER": identity.header,
            "SSL_CERT_FILE": str(graph.ca_path),
        }
        process = start_bot(env, tmp_path / "bot.log")
        try:
            async with aiohttp.ClientSession() as session:
                await wait_until_serving(session, f"http://127.0.0.1:{port}", process)
                member = user(MEMBER)
                for _ in range(3):  # the first token may take a moment; the retry card then says to try again
                    async with session.post(f"http://127.0.0.1:{port}/api/messages",
                                            json=member.message(service, "nieuw")) as response:
                        assert response.status == 202
                    if "referral.consent" in actions(connector.sent_cards()[-1]):
                        break
        finally:
            process.terminate()
            process.wait(timeout=10)
    log_text = (tmp_path / "bot.log").read_text()
    assert "referral.consent" in actions(connector.sent_cards()[-1]), log_text
    assert identity.resources and graph.membership_checks
    assert {check.authorization for check in graph.membership_checks} == {f"Bearer {graph.token}"}


def start_bot(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen([sys.executable, "-m", "bot", "serve"], env=env, cwd=PROJECT_ROOT, stdout=output,
                                stderr=output)


async def wait_until_serving(session: aiohttp.ClientSession, url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            async with session.get(f"{url}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            await asyncio.sleep(0.2)
    raise AssertionError("the bot did not start")
