"""A SIGKILL at each commit boundary leaves nothing half-way: state, register and messages agree after a restart.

The real bot process (`tests.support.crashing_bot`, i.e. `python -m bot serve` killing itself just
before or just after the commit of one step), driven over HTTP like Teams; then the real bot again
on the same data folder. Killed *before* a step's commit, nothing of the step exists (no state
change, no register entry, no message) and the user can do it again; killed *after*, all of it
exists and every Teams message it owes arrives, once. A cancelled draft is wiped and recorded in one
commit too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.activities import TeamsUser
from tests.support.bot_process import PROJECT_ROOT, bot_command, bot_process, wait_until_ready
from tests.support.bot_server import RestartableSite, serve_restartable
from tests.support.card_reading import actions
from tests.support.connector import ConnectorStandIn
from tests.support.ocmw_flow import CHANNEL
from tests.support.sample_values import CLIENT_FORM, CONSENT_ALL, PROTOCOL_ID
from tests.support.teams_messages import card_verbs, identity, kind

REFERRER = TeamsUser("aad-referrer-1", "An Verpleeg", "a:personal-referrer")
WORKER = TeamsUser("aad-ocmw-1", "Olga Maatschappelijk", f"{CHANNEL};messageid=1700000000001", channel=True)


@dataclass
class Run:
    """One scenario's bot, connector and what the steps learnt."""

    bot_url: str
    site: RestartableSite
    connector: ConnectorStandIn
    session: aiohttp.ClientSession
    data_dir: Path
    env: dict[str, str]
    log: Path
    draft_id: str = ""
    reference: str = ""
    correction_id: str = ""
    answers: list[dict[str, Any]] = field(default_factory=list)

    async def act(self, user: TeamsUser, verb: str, data: dict[str, str]) -> dict[str, Any]:
        async with self.session.post(f"{self.bot_url}/api/messages",
                                     json=user.card_action(self.site.url, verb, data)) as response:
            assert response.status == 200
            body: dict[str, Any] = await response.json()
            return body["value"]  # type: ignore[no-any-return]

    async def act_confirmed(self, user: TeamsUser, verb: str, data: dict[str, str]) -> dict[str, Any]:
        """The first click asks once more; the second confirms (the step's commit is in that one)."""
        question = await self.act(user, verb, data)
        assert actions(question)[verb].get("confirmed") == "true", question
        return await self.act(user, verb, actions(question)[verb])

    def db(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.data_dir / "bot.sqlite3")
        connection.row_factory = sqlite3.Row
        return connection


async def _link(run: Run) -> None:
    code = (await asyncio.to_thread(bot_command, run.env, "link-ocmw", PROTOCOL_ID)).strip().splitlines()[-1]
    async with run.session.post(f"{run.bot_url}/api/messages",
                                json=WORKER.message(run.site.url, f"<at>Veilig doorverwijzen</at> koppel {code}")):
        pass


async def _review(run: Run) -> None:
    start = await run.act(REFERRER, "referral.start", {})
    run.draft_id = actions(start)["referral.consent"]["draftId"]
    await run.act(REFERRER, "referral.consent", {"draftId": run.draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL})
    await run.act(REFERRER, "referral.details", {"draftId": run.draft_id, **CLIENT_FORM})
    with run.db() as db:
        run.reference = str(db.execute("SELECT reference FROM drafts WHERE id = ?", (run.draft_id,)).fetchone()[0])


async def _send(run: Run) -> None:
    run.answers.append(await run.act(REFERRER, "referral.send", {"draftId": run.draft_id}))


async def _delivered(run: Run) -> None:
    await _wait(lambda: _state(run) == "sent" and _quiet(run))


async def _ack(run: Run) -> None:
    run.answers.append(await run.act(WORKER, "ack.receive", {"reference": run.reference}))


async def _no_help(run: Run) -> None:
    run.answers.append(await run.act_confirmed(WORKER, "referral.outcome",
                                               {"reference": run.reference, "outcome": "contact_no_help_wanted"}))


async def _deleted(run: Run) -> None:
    run.answers.append(await run.act_confirmed(WORKER, "referral.deleted", {"reference": run.reference}))


async def _report_phone(run: Run) -> None:
    run.answers.append(await run.act(WORKER, "referral.quality", {"reference": run.reference, "item": "phone"}))


async def _correction_request(run: Run) -> str:
    """The id of the correction request whose card reached the referrer's chat."""
    await _wait(lambda: any("correction.submit" in card_verbs(call) for call in run.connector.accepted))
    [request] = [call for call in run.connector.accepted if "correction.submit" in card_verbs(call)]
    return str(card_verbs(request)["correction.submit"]["correctionId"])


async def _submit_phone(run: Run) -> None:
    run.correction_id = await _correction_request(run)
    run.answers.append(await run.act(REFERRER, "correction.submit",
                                     {"correctionId": run.correction_id, "phone": "0470 11 22 33"}))


async def _no_correct_phone(run: Run) -> None:
    """"Er is geen juist telefoonnummer", confirmed: the OCMW's channel is asked to delete the wrong number."""
    run.correction_id = await _correction_request(run)
    run.answers.append(await run.act_confirmed(REFERRER, "correction.none", {"correctionId": run.correction_id}))


async def _withdraw(run: Run) -> None:
    run.answers.append(await run.act_confirmed(REFERRER, "consent.withdraw", {"reference": run.reference}))


Step = Callable[[Run], Awaitable[None]]


@dataclass(frozen=True)
class Case:
    """Steps up to the one that crashes, and what must hold after the restart."""

    crash_at: str
    before: tuple[Step, ...]  # done with the crashing process, before the step that crashes
    step: Step  # the step whose commit the process dies at (redone after a crash before it)
    state: str  # the referral's state when everything is done
    event: str  # the register event of the step, exactly once in the end
    messages: dict[str, int]  # Teams messages accepted in the end, by kind
    user_redoes: bool  # after a crash the user does the step again (else the bot finishes it on its own)


def _case(name: str, event: str, moment: str, before: tuple[Step, ...], step: Step, state: str,
          messages: dict[str, int], *, occurrence: int = 1, user_redoes: bool | None = None,
          counted: str | None = None) -> pytest.ParameterSet:
    crash_at = f"{event}:{moment}:{occurrence}"
    redoes = moment == "before" if user_redoes is None else user_redoes
    return pytest.param(Case(crash_at, before, step, state, counted or event, messages, redoes), id=f"{name}-{moment}")


DELIVERED = {"link-reply": 1, "referrer-card": 1, "delivered-text": 1, "ocmw-card": 1}
ACKED = {**DELIVERED, "ocmw-card-edit": 1, "ack-text": 1}
NO_HELP = {**DELIVERED, "ocmw-card-edit": 2, "ack-text": 1, "outcome-text": 1}
CASES = [
    _case("send-claimed", "sending", "after", (_link, _review), _send, "sent", {**DELIVERED, "interrupted-text": 1},
          user_redoes=True, counted="queued"),
    _case("send", "queued", "before", (_link, _review), _send, "sent", {**DELIVERED, "interrupted-text": 1}),
    _case("send", "queued", "after", (_link, _review), _send, "sent", DELIVERED),
    *[_case("delivery", "delivered", moment, (_link, _review), _send, "sent", DELIVERED, user_redoes=False)
      for moment in ("before", "after")],
    *[_case("acknowledgement", "acknowledged", moment, (_link, _review, _send, _delivered), _ack, "received", ACKED)
      for moment in ("before", "after")],
    *[_case("outcome", "outcome_recorded", moment, (_link, _review, _send, _delivered, _ack), _no_help,
            "no_help_wanted", NO_HELP) for moment in ("before", "after")],
    *[_case("deletion", "deletion_confirmed", moment, (_link, _review, _send, _delivered, _ack, _no_help), _deleted,
            "data_deleted", {**NO_HELP, "ocmw-card-edit": 3, "deleted-text": 1}) for moment in ("before", "after")],
    *[_case("correction-request", "correction_requested", moment, (_link, _review, _send, _delivered, _ack),
            _report_phone, "received", {**ACKED, "ocmw-card-edit": 2, "correction-request": 1})
      for moment in ("before", "after")],
    *[_case("correction", "queued", moment, (_link, _review, _send, _delivered, _ack, _report_phone), _submit_phone,
            "received", {**ACKED, "ocmw-card-edit": 2, "correction-request": 1, "referrer-card": 2,
                         "delivered-text": 2, "ocmw-card": 2}, occurrence=2) for moment in ("before", "after")],
    *[_case("no-correct-value", "no_correct_value", moment, (_link, _review, _send, _delivered, _ack, _report_phone),
            _no_correct_phone, "received", {**ACKED, "ocmw-card-edit": 2, "correction-request": 1, "none-to-ocmw": 1})
      for moment in ("before", "after")],
    *[_case("withdrawal", "consent_withdrawn", moment, (_link, _review, _send, _delivered), _withdraw,
            "consent_withdrawn", {**DELIVERED, "ocmw-card-edit": 1, "withdrawal-notice": 1})
      for moment in ("before", "after")],
]


@pytest.mark.parametrize("case", CASES)
async def test_a_kill_at_a_commit_boundary_leaves_state_register_and_messages_consistent(
    tmp_path: Path, case: Case
) -> None:
    async with _scenario(tmp_path) as run:
        with _crashing_process(run, case.crash_at) as crashing:
            await wait_until_ready(run.bot_url, run.session)
            for step in case.before:
                await step(run)
                await _wait(lambda: _quiet(run), log=run.log)  # the crash is to hit the step under test only
            with pytest.raises(aiohttp.ClientError):  # the process dies while answering (or right after)
                await case.step(run)
                await _wait(lambda: crashing.poll() is not None, seconds=10)
                raise aiohttp.ClientConnectionError("died after answering")
            crashing.wait(timeout=10)
        assert "crashing_bot: SIGKILL" in run.log.read_text(), run.log.read_text()[-3000:]
        died_before = case.crash_at.split(":")[1] == "before"
        if died_before:
            assert _events(run).count(case.event) == _events_expected_before(case), "nothing of the step committed"

        with bot_process(run.env, run.log):
            await wait_until_ready(run.bot_url, run.session)
            if case.user_redoes and case.step is _send:
                await _wait(lambda: _draft_state(run) == "review")
                await _send(run)  # pressing "Versturen" again on the review card
            elif case.user_redoes:
                await case.step(run)  # the user does it again
            await _wait(lambda: _state(run) == case.state and _quiet(run), log=run.log)
            await asyncio.sleep(0.5)  # time for a duplicate to show up

    assert _state(run) == case.state
    assert _events(run).count(case.event) == 1 + _events_expected_before(case), _events(run)
    assert _register_verifies(run)
    kinds = Counter(kind(call) for call in run.connector.accepted)
    assert kinds == Counter(case.messages), (kinds, run.log.read_text()[-3000:])
    duplicates = [key for key, n in Counter(identity(call) for call in run.connector.accepted).items() if n > 1]
    assert duplicates == []


@pytest.mark.parametrize("moment", ["before", "after"])
async def test_a_kill_at_the_commit_of_a_cancel_leaves_the_cancellation_in_the_register_or_nothing(
    tmp_path: Path, moment: str
) -> None:
    """The wipe of a cancelled draft and its `cancelled` register entry: both or neither, whatever the kill.

    They were two commits: killed between them, the draft was cancelled and wiped and the DPO's register
    showed a referral started, consent recorded and no end, which a second click could not mend.
    """
    async with _scenario(tmp_path) as run:
        with _crashing_process(run, f"cancelled:{moment}") as crashing:
            await wait_until_ready(run.bot_url, run.session)
            await _review(run)
            with pytest.raises(aiohttp.ClientError):  # the process dies while answering
                await _cancel(run)
            crashing.wait(timeout=10)
        assert "crashing_bot: SIGKILL" in run.log.read_text(), run.log.read_text()[-3000:]
        half = (_draft_state(run), _events(run).count("cancelled"))

        with bot_process(run.env, run.log):
            await wait_until_ready(run.bot_url, run.session)
            # The referrer, having seen the click fail, presses "Ja, annuleren" again.
            await run.act(REFERRER, "referral.cancel", {"draftId": run.draft_id, "confirmed": "true"})

    assert half == {"before": ("review", 0), "after": ("cancelled", 1)}[moment]
    assert (_draft_state(run), _events(run).count("cancelled")) == ("cancelled", 1)
    assert _register_verifies(run)


async def test_the_wal_a_kill_after_a_draft_wipe_left_is_emptied_at_the_next_start(tmp_path: Path) -> None:
    """A cancelled draft's sealed data does not stay in SQLite's WAL after a kill right after the wipe's commit.

    The WAL is emptied right after a wipe commits, and what a crash in between leaves is for the
    sweep at start. That sweep checkpointed only a WAL this process had dirtied, which a new process
    never has: the killed process's WAL kept the sealed draft, beside the draft key, until a later wipe.
    """
    async with _scenario(tmp_path, SWEEP_INTERVAL_SECONDS="1") as run:
        with _crashing_process(run, "cancelled:after") as crashing:
            await wait_until_ready(run.bot_url, run.session)
            await _review(run)
            sealed = _sealed_details(run)
            gc.collect()  # this test's connections closed: the last one to close would checkpoint the WAL itself
            with pytest.raises(aiohttp.ClientError):  # dies as the commit returns, before the WAL's checkpoint
                await _cancel(run)
            crashing.wait(timeout=10)
        assert "crashing_bot: SIGKILL" in run.log.read_text(), run.log.read_text()[-3000:]
        assert _files_holding(run, sealed) == ["bot.sqlite3-wal"], "the old page version, as the kill left it"

        with bot_process(run.env, run.log):
            await wait_until_ready(run.bot_url, run.session, "/readyz")
            await asyncio.sleep(2)  # the start's sweep, and another (SWEEP_INTERVAL_SECONDS=1)
            still = _files_holding(run, sealed)

    assert still == [], f"the cancelled draft's sealed data is still in {still} after the restart"


def _sealed_details(run: Run) -> bytes:
    """The draft's sealed data as stored (read while the bot that wrote it runs)."""
    with contextlib.closing(run.db()) as db:
        row = db.execute("SELECT sealed_details FROM drafts WHERE id = ?", (run.draft_id,)).fetchone()
    assert row is not None and row[0], "the draft at review holds its sealed data"
    return bytes(row[0])


def _files_holding(run: Run, needle: bytes) -> list[str]:
    """The data folder's SQLite files that hold `needle`, read as bytes: opened with SQLite, the last
    connection to close would checkpoint the WAL and hide what the killed bot left there."""
    return sorted(path.name for path in run.data_dir.glob("bot.sqlite3*") if needle in path.read_bytes())


def _events_expected_before(case: Case) -> int:
    """Register entries of the step's event that exist already before the step (a correction's second "queued")."""
    return 1 if case.crash_at.endswith(":2") else 0


async def _cancel(run: Run) -> None:
    run.answers.append(await run.act_confirmed(REFERRER, "referral.cancel", {"draftId": run.draft_id}))


@contextlib.asynccontextmanager
async def _scenario(tmp_path: Path, **settings: str) -> AsyncIterator[Run]:
    """The connector stand-in, a client session and the settings (`settings` added) of one scenario's bot."""
    connector = ConnectorStandIn()
    port = _free_port()
    env = {**os.environ, "BOT_DATA_DIR": str(tmp_path / "data"), "PORT": str(port),
           "LOCAL_ZIP_PASSWORD": "K7M2QX9PLR4TWB8N6VHJ3CZD", "OUTBOX_LEASE_SECONDS": "2",
           "OUTBOX_RETRY_INITIAL_SECONDS": "1", "TEAMS_RETRY_INITIAL_SECONDS": "1", "TEAMS_RETRY_MAX_SECONDS": "1",
           "RATE_LIMIT_ACTIONS_PER_MINUTE": "10000", **settings}
    async with serve_restartable(connector.app()) as site, aiohttp.ClientSession() as session:
        yield Run(f"http://127.0.0.1:{port}", site, connector, session, tmp_path / "data", env, tmp_path / "bot.log")


def _crashing_process(run: Run, crash_at: str) -> Any:
    return _popen([sys.executable, "-m", "tests.support.crashing_bot"], {**run.env, "CRASH_AT": crash_at}, run.log)


class _popen:
    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self._command, self._env, self._log = command, env, log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> subprocess.Popen[bytes]:
        with self._log.open("ab") as output:
            self.process = subprocess.Popen(self._command, env=self._env, stdout=output, stderr=output,
                                            cwd=PROJECT_ROOT)
        return self.process

    def __exit__(self, *_: object) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def _free_port() -> int:
    from tests.support.smtp_server import free_port

    return free_port()


def _state(run: Run) -> str | None:
    if not run.reference:
        return None
    with run.db() as db:
        row = db.execute("SELECT state FROM referrals WHERE reference = ?", (run.reference,)).fetchone()
    return None if row is None else str(row["state"])


def _draft_state(run: Run) -> str:
    with run.db() as db:
        return str(db.execute("SELECT state FROM drafts WHERE id = ?", (run.draft_id,)).fetchone()["state"])


def _quiet(run: Run) -> bool:
    """Nothing left to send: no mail and no Teams message queued or in flight."""
    with run.db() as db:
        mails = db.execute("SELECT COUNT(*) FROM outbox WHERE state IN ('queued', 'sending')").fetchone()[0]
        chats = db.execute("SELECT COUNT(*) FROM message_outbox WHERE state IN ('queued', 'sending')").fetchone()[0]
    return mails == 0 and chats == 0


def _events(run: Run) -> list[str]:
    with run.db() as db:
        return [str(row["event"]) for row in db.execute(
            "SELECT event FROM register WHERE reference = ? OR reference LIKE ? ORDER BY seq",
            (run.reference, f"{run.reference}-%"))]


def _register_verifies(run: Run) -> bool:
    done = subprocess.run([sys.executable, "-m", "bot", "register", "verify"], env=run.env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    return done.returncode == 0


async def _wait(condition: Callable[[], bool], *, seconds: float = 20.0, log: Path | None = None) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(log.read_text()[-4000:] if log else "timed out")
        await asyncio.sleep(0.05)

