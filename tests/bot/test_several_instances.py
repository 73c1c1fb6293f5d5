"""Two bot processes on one PostgreSQL database, as two App Service instances behind one load balancer.

Both are the real `python -m bot serve`, each on its own port with its own empty data folder; they
share only what instances share in production: `DATABASE_URL` (a fresh database on the suite's own
server, migrated first by `python -m bot migrate`), the ZIP password and the draft key
(`LOCAL_ZIP_PASSWORD`, `LOCAL_DRAFT_KEY`), one real SMTP server (aiosmtpd, STARTTLS) and one
Bot Framework connector stand-in. Requests go to either instance as a load balancer would send them.

What one instance starts the other continues; each mail and each Teams message goes out once,
whichever worker takes it, and each mail once also when an instance is killed and a relay hangs;
the processing register stays one chain that `python -m bot register verify` accepts; periodic jobs
run once per period; a rate limit counts the clicks on both. Both processes log at INFO, and
neither log holds the family's data. A process started as `tests.support.skewed_bot` reads a wall
clock that is off (`CLOCK_SKEW_SECONDS`, or `CLOCK_SKEW_FILE` to step it as NTP does), as on a VM
resumed after a pause; the database server keeps the true time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import cards
from bot.storage.database import Database, DatabaseSettings, from_text, open_database, to_text
from tests.support import sevenzip
from tests.support.activities import TeamsUser
from tests.support.bot_process import PROJECT_ROOT, bot_command, bot_process, wait_until_ready
from tests.support.bot_server import serve
from tests.support.card_reading import actions, texts
from tests.support.connector import ConnectorStandIn, RecordedCall
from tests.support.databases import OPENED, postgres_url
from tests.support.ocmw_flow import CHANNEL
from tests.support.postgres_server import PostgresServer
from tests.support.sample_values import CLIENT_FORM, CLIENT_VALUES, CONSENT_ALL, MAILBOX, PROTOCOL_ID
from tests.support.smtp_server import SmtpTestServer, free_port, smtp_server
from tests.support.teams_messages import card_verbs, identity, kind

ZIP_PASSWORD = "K7M2QX9PLR4TWB8N6VHJ3CZD"
DRAFT_KEY = "3c9f1e0a7b2d4c6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e"
CRASHING_BOT = "tests.support.crashing_bot"
SKEWED_BOT = "tests.support.skewed_bot"
#: The defaults of a deployment: a lease of 2 minutes, a relay given 30 s.
DEFAULT_DELIVERY = {"OUTBOX_LEASE_SECONDS": "120", "SMTP_TIMEOUT_SECONDS": "30"}
REFERRER = TeamsUser("aad-referrer-1", "An Verpleeg", "a:personal-referrer")
COLLEAGUE = TeamsUser("aad-colleague-2", "Bert Collega", "a:personal-colleague")
WORKER = TeamsUser("aad-ocmw-1", "Olga Maatschappelijk", f"{CHANNEL};messageid=1700000000001", channel=True)


@dataclass
class Instance:
    """One running bot process and where it listens."""

    url: str
    process: subprocess.Popen[bytes]


@dataclass
class Deployment:
    """The shared database, mail server and Teams stand-in, and the bot processes on them."""

    env: dict[str, str]
    db: Database
    smtp: SmtpTestServer
    connector: ConnectorStandIn
    service_url: str
    session: aiohttp.ClientSession
    folder: Path
    processes: contextlib.ExitStack
    instances: dict[str, Instance] = field(default_factory=dict)

    async def start(self, *names: str, module: str = "bot", **settings: str) -> None:
        """Start these instances side by side with these extra settings; wait until each answers."""
        for name in names:
            port = free_port()
            env = {**self.env, **settings, "PORT": str(port), "BOT_DATA_DIR": str(self.folder / name)}
            process = self.processes.enter_context(bot_process(env, self.log(name), module=module))
            self.instances[name] = Instance(f"http://127.0.0.1:{port}", process)
        await asyncio.gather(*(wait_until_ready(self.instances[name].url, self.session) for name in names))

    def log(self, name: str) -> Path:
        """Everything instance `name` wrote, in every one of its runs."""
        return self.folder / f"{name}.log"

    async def act(self, on: str, user: TeamsUser, verb: str, data: dict[str, Any], reply_to: str = "card-1") -> Any:
        """Click a card button, the request landing on instance `on`; the card (or banner text) Teams gets back."""
        activity = user.card_action(self.service_url, verb, data, reply_to=reply_to)
        async with self.session.post(f"{self.instances[on].url}/api/messages", json=activity) as response:
            assert response.status == 200, (response.status, await response.text())
            body: dict[str, Any] = await response.json()
        return body["value"]

    async def act_confirmed(self, on: str, user: TeamsUser, verb: str, data: dict[str, Any]) -> Any:
        """A button that asks once more: the question from instance `on`, the confirmation there too."""
        question = await self.act(on, user, verb, data)
        assert actions(question)[verb].get("confirmed") == "true", question
        return await self.act(on, user, verb, actions(question)[verb])

    async def say(self, on: str, user: TeamsUser, text: str) -> None:
        async with self.session.post(f"{self.instances[on].url}/api/messages",
                                     json=user.message(self.service_url, text)) as response:
            assert response.status == 202, response.status

    async def to_review(self, on: str, user: TeamsUser = REFERRER) -> str:
        """Start, consent and the family's data on instance `on`; the draft's id."""
        start = await self.act(on, user, "referral.start", {})
        draft_id = str(actions(start)["referral.consent"]["draftId"])
        await self.act(on, user, "referral.consent", {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL})
        review = await self.act(on, user, "referral.details", {"draftId": draft_id, **CLIENT_FORM})
        assert "referral.send" in actions(review), review
        return draft_id

    async def send(self, on: str, draft_id: str, user: TeamsUser = REFERRER) -> str:
        """Press "Versturen" on instance `on`; the reference the referrer is shown."""
        queued = await self.act(on, user, "referral.send", {"draftId": draft_id})
        return next(word for word in texts(queued).replace('"', " ").split() if word.startswith("VD-"))

    async def refer(self, on: str) -> str:
        """A whole referral on instance `on`, up to "queued"; its reference."""
        return await self.send(on, await self.to_review(on))

    async def link_ocmw(self, on: str) -> None:
        """`python -m bot link-ocmw`, then `koppel <code>` in the OCMW's channel, answered by instance `on`."""
        code = (await asyncio.to_thread(bot_command, self.env, "link-ocmw", PROTOCOL_ID)).strip().splitlines()[-1]
        await self.say(on, WORKER, f"<at>Veilig doorverwijzen</at> koppel {code}")

    async def states(self) -> dict[str, str]:
        """Every referral's state, by reference."""
        rows = await self.db.fetch_all("SELECT reference, state FROM referrals")
        return {str(row["reference"]): str(row["state"]) for row in rows}

    async def quiet(self) -> bool:
        """Nothing left to send: no mail and no Teams message queued or leased."""
        waiting = await self.db.scalar(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE state IN ('queued', 'sending'))"
            " + (SELECT COUNT(*) FROM message_outbox WHERE state IN ('queued', 'sending')) AS n")
        return int(waiting) == 0

    async def all_in(self, state: str, references: list[str]) -> bool:
        """Each of `references` is in `state`, and nothing is left to send."""
        states = await self.states()
        return all(states.get(reference) == state for reference in references) and await self.quiet()

    async def events(self, reference: str) -> Counter[str]:
        rows = await self.db.fetch_all("SELECT event FROM register WHERE reference = :reference",
                                       {"reference": reference})
        return Counter(str(row["event"]) for row in rows)

    def register_verify(self) -> subprocess.CompletedProcess[str]:
        """`python -m bot register verify` against the shared database."""
        return subprocess.run([sys.executable, "-m", "bot", "register", "verify"], env=self.env, cwd=PROJECT_ROOT,
                              capture_output=True, text=True, timeout=60, check=False)

    def mails_by_message_id(self) -> Counter[str]:
        """How often the SMTP server accepted each Message-ID."""
        return Counter(str(email.message_from_bytes(mail.data, policy=email.policy.default)["Message-ID"])
                       for mail in self.smtp.messages)

    def client_data_in_logs(self) -> dict[str, list[str]]:
        """The family's values found in any instance's log, by instance (empty: none)."""
        found = {}
        for name in self.instances:
            log = self.log(name).read_text(errors="replace")
            leaked = [value for value in CLIENT_VALUES if value in log]
            if leaked:
                found[name] = leaked
        return found

    async def until(self, condition: Callable[[], Awaitable[bool]], what: str, seconds: float = 20.0) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while not await condition():
            if asyncio.get_running_loop().time() > deadline:
                tails = "\n".join(f"--- {name}\n{self.log(name).read_text(errors='replace')[-2500:]}"
                                  for name in self.instances)
                raise AssertionError(f"timed out waiting until {what}\n{tails}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def deployment(postgres: PostgresServer, tmp_path: Path) -> AsyncIterator[Deployment]:
    """A fresh database migrated by `python -m bot migrate`, the mail server and Teams; no bot running yet."""
    url = postgres_url(postgres)
    connector = ConnectorStandIn()
    with smtp_server(tls="starttls") as smtp:
        env = {**os.environ, "DATABASE_URL": url, "MAIL_TRANSPORT": "smtp", "SMTP_HOST": smtp.host,
               "SMTP_PORT": str(smtp.port), "SMTP_TLS": "starttls", "SMTP_CA_FILE": str(smtp.ca_path),
               "SMTP_TIMEOUT_SECONDS": "2", "OUTBOX_LEASE_SECONDS": "4", "OUTBOX_RETRY_INITIAL_SECONDS": "1",
               "OUTBOX_RETRY_MAX_SECONDS": "1", "TEAMS_RETRY_INITIAL_SECONDS": "1", "TEAMS_RETRY_MAX_SECONDS": "1",
               "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD, "LOCAL_DRAFT_KEY": DRAFT_KEY, "LOG_LEVEL": "INFO",
               "RATE_LIMIT_ACTIONS_PER_MINUTE": "10000", "RATE_LIMIT_STARTS_PER_HOUR": "10000"}
        await asyncio.to_thread(bot_command, env, "migrate")
        db = open_database(DatabaseSettings(sqlite_path=tmp_path / "unused.sqlite3", url=url, pool_size=2))
        OPENED.append(db)
        async with serve(connector.app()) as service_url, aiohttp.ClientSession() as session:
            with contextlib.ExitStack() as processes:  # stopped before Teams and the mail server go
                yield Deployment(env, db, smtp, connector, service_url, session, tmp_path, processes)


async def test_a_referral_whose_steps_alternate_between_two_instances_goes_out_once(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Start, consent and data on A; review and send on B; the link on A; receipt on B, outcome on A, deletion on B.

    The mail goes out once (by either worker), every Teams message the steps cause arrives once,
    each step is in the register once, and neither instance kept anything on its disk.
    """
    d = deployment
    await d.start("A", "B")
    draft_id = await d.to_review("A")
    review = await d.act("B", REFERRER, cards.VERB_VIEW, {"draftId": draft_id})
    assert "referral.send" in actions(review) and CLIENT_FORM["firstName"] in texts(review), "B opens A's sealed draft"
    # "Versturen" on B, and the same click on A at the same moment (a retried invoke): it goes out once.
    sent = await asyncio.gather(*(d.act(on, REFERRER, "referral.send", {"draftId": draft_id}) for on in ("B", "A")))
    assert any("wordt verstuurd" in texts(answer) for answer in sent), sent
    reference = str(await d.db.scalar("SELECT reference FROM drafts WHERE id = :id", {"id": draft_id}))
    await d.until(lambda: d.all_in("sent", [reference]), "the mail is delivered")

    [mail] = d.smtp.messages
    [message_id] = d.mails_by_message_id()
    assert message_id == await d.db.scalar("SELECT message_id FROM referrals WHERE reference = :r", {"r": reference})
    assert mail.rcpt_tos == (MAILBOX,) and mail.tls
    [attachment] = email.message_from_bytes(mail.data, policy=email.policy.default).iter_attachments()
    opened = sevenzip.extract(attachment.get_content(), ZIP_PASSWORD, tmp_path / "package")
    assert opened.returncode == 0, opened.stdout + opened.stderr
    assert CLIENT_FORM["lastName"] in "".join(path.read_text("utf-8") for path in (tmp_path / "package").iterdir())

    await d.link_ocmw("A")
    await d.until(lambda: _accepted(d, "ocmw-card", 1), "the OCMW's card is posted")
    await asyncio.gather(*(d.act(on, WORKER, "ack.receive", {"reference": reference}) for on in ("B", "A")))
    await d.act_confirmed("A", WORKER, "referral.outcome",
                          {"reference": reference, "outcome": "contact_no_help_wanted"})
    await d.act_confirmed("B", WORKER, "referral.deleted", {"reference": reference})
    await d.until(lambda: d.all_in("data_deleted", [reference]), "the deletion is recorded and told")
    await asyncio.sleep(0.5)  # time for a message sent twice to show up

    assert d.mails_by_message_id() == Counter({message_id: 1})
    assert Counter(kind(call) for call in d.connector.accepted) == Counter({
        "referrer-card": 1, "delivered-text": 1, "link-reply": 1, "ocmw-card": 1, "ack-text": 1, "outcome-text": 1,
        "deleted-text": 1, "ocmw-card-edit": 3})
    assert _sent_twice(d.connector.accepted) == []
    events = await d.events(reference)
    assert events == Counter(["referral_started", "consent_confirmed", "package_built", "queued", "delivered",
                              "acknowledged", "outcome_recorded", "deletion_confirmed"]), events
    verified = d.register_verify()
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert d.client_data_in_logs() == {}
    assert not (tmp_path / "A").exists() and not (tmp_path / "B").exists(), "nothing on an instance's disk"


async def test_twenty_referrals_with_one_instance_killed_midway_each_mail_goes_out_once(deployment: Deployment) -> None:
    """A dies right after committing its sixth "Versturen", while the relay hangs; B goes on; A restarts.

    The first eight go through both at once and are delivered; then the relay hangs (it takes
    connections and never answers) while the other twelve are sent, A is killed and restarted, and
    it stays hung for longer than a lease, so mails leased by A before it died, and mails waiting
    behind a slow send, are taken over when their lease runs out.

    Why every Message-ID must arrive exactly once, with no allowance: a mail is sent twice only when
    its worker stops between the relay's "250 accepted" and the commit that marks it delivered
    (killed, or outlasting its lease). Everything before the hang was delivered and committed, and
    a hung relay accepts nothing, so no mail of A's is in that window when A dies; each mail a
    worker leases is sent within its lease (`SMTP_TIMEOUT_SECONDS` is half of it). Teams messages
    are not counted here: A may die between Teams' answer and the commit, where the README says a
    post can show twice.
    """
    d = deployment
    await d.start("A", module=CRASHING_BOT, CRASH_AT="queued:after:6")
    await d.start("B")
    references = list(await asyncio.gather(*(d.refer(on) for on in ["A", "B"] * 4)))  # at once; A's first four
    await d.until(lambda: d.all_in("sent", references), "the first eight are delivered")

    d.smtp.hang()
    references += [await d.refer("A"), await d.refer("B")]  # A's fifth
    killed_draft = await d.to_review("A")
    with pytest.raises(aiohttp.ClientError):  # A's sixth: committed, and A dies before answering
        await d.send("A", killed_draft)
    assert d.instances["A"].process.wait(timeout=10) == -9
    assert "crashing_bot: SIGKILL after the commit of queued #6" in d.log("A").read_text()
    references.append(str(await d.db.scalar("SELECT reference FROM drafts WHERE id = :id", {"id": killed_draft})))
    references += [await d.refer("B") for _ in range(4)]
    await d.start("A")
    references += [await d.refer(on) for on in ["A", "B", "A", "B", "A"]]
    await asyncio.sleep(5)  # the relay stays hung for longer than a lease
    d.smtp.start()
    await d.until(lambda: d.all_in("sent", references), "all twenty are delivered", seconds=30)

    assert len(set(references)) == 20 and await d.states() == dict.fromkeys(references, "sent")
    mails = d.mails_by_message_id()
    assert [message_id for message_id, count in mails.items() if count != 1] == []
    message_ids = {str(row["message_id"]) for row in await d.db.fetch_all("SELECT message_id FROM referrals")}
    assert set(mails) == message_ids
    for reference in references:
        events = await d.events(reference)
        assert (events["package_built"], events["queued"], events["delivered"]) == (1, 1, 1), (reference, events)
    entries = await d.db.fetch_one("SELECT COUNT(*) AS n, MIN(seq) AS first, MAX(seq) AS last FROM register")
    assert entries is not None and (entries["first"], entries["last"]) == (1, entries["n"]), "one chain, no gaps"
    verified = d.register_verify()
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert d.client_data_in_logs() == {}


async def test_periodic_jobs_run_once_per_period_across_the_instances(deployment: Deployment) -> None:
    """Sweep and reminders every second on two instances: each period's run is claimed by one of them.

    A trigger (the test's, not the bot's) records every claim in `job_runs`: consecutive claims of a
    job are at least a period apart. Each reminder and each wiped draft's card replacement goes out once.
    """
    d = deployment
    await _record_job_claims(d.db)
    await d.start("A", "B", SWEEP_INTERVAL_SECONDS="1")
    await d.link_ocmw("A")
    references = [await d.refer("A"), await d.refer("B")]
    start = await d.act("B", REFERRER, "referral.start", {}, reply_to="card-draft")
    draft_id = actions(start)["referral.consent"]["draftId"]
    await d.act("A", REFERRER, "referral.consent", {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL},
                reply_to="card-draft")
    await d.until(lambda: d.all_in("sent", references), "both are delivered")
    before = len(d.connector.accepted)

    # Time passes, in the data: both were sent three weeks ago, the draft has been idle for two hours.
    now = dt.datetime.now(dt.UTC)
    await d.db.execute("UPDATE referrals SET sent_at = :then", {"then": to_text(now - dt.timedelta(days=21))})
    await d.db.execute("UPDATE drafts SET updated_at = :then WHERE id = :id",
                       {"then": to_text(now - dt.timedelta(hours=2)), "id": draft_id})
    await d.until(lambda: _accepted_since(d, before, 5), "the reminders and the card replacement are sent")
    await asyncio.sleep(3)  # three more periods: nothing is queued again

    caused = d.connector.accepted[before:]
    assert Counter(kind(call) for call in caused) == Counter({"ack-reminder-ocmw": 2, "ack-reminder-referrer": 2,
                                                              "referrer-card": 1})
    [replaced] = [call for call in caused if kind(call) == "referrer-card"]
    assert replaced.method == "PUT" and replaced.path.endswith("/activities/card-draft")
    assert "verlopen" in texts(replaced.body)
    claims = await d.db.fetch_all("SELECT name, started_at, instance FROM test_job_claims ORDER BY started_at")
    for job in ("sweep", "reminders"):
        times = [from_text(str(row["started_at"])) for row in claims if row["name"] == job]
        assert len(times) >= 4, claims
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert min(gaps) >= dt.timedelta(seconds=1), (job, gaps)
    assert [row["name"] for row in claims].count("retention") == 1, "hourly: once for both instances"
    assert d.client_data_in_logs() == {}


async def test_an_instance_whose_clock_is_minutes_ahead_leaves_a_mail_another_is_still_sending(
    deployment: Deployment,
) -> None:
    """README: a row whose lease still runs is never touched by anyone else; each mail goes out once.

    Instance a leases the mail (2 minutes) and hands it to a relay slow to confirm (15 s). Instance b
    starts meanwhile with its clock 3 minutes ahead: by its clock a's lease ran out long ago.
    """
    deployment.smtp.answer_data_after(15)
    await deployment.start("a", **DEFAULT_DELIVERY)
    reference = await deployment.refer("a")

    async def at_the_relay() -> bool:
        return len(deployment.smtp.messages) >= 1

    await deployment.until(at_the_relay, "a's mail is at the relay")
    await deployment.start("b", module=SKEWED_BOT, CLOCK_SKEW_SECONDS="180", **DEFAULT_DELIVERY)

    async def delivered() -> bool:
        return await deployment.all_in("sent", [reference])

    await deployment.until(delivered, "the referral is delivered", seconds=60)
    await asyncio.sleep(1)
    assert set(deployment.mails_by_message_id().values()) == {1}, deployment.mails_by_message_id()


async def test_a_draft_is_wiped_no_sooner_than_its_idle_time_whichever_instance_sweeps(
    deployment: Deployment,
) -> None:
    """README: an unfinished referral left idle DRAFT_TTL_MINUTES is wiped (the cards say so).

    Scaled down: a time-to-live of 1 minute, swept every second, and instance b's clock 45 s ahead
    (as 30 minutes against a clock some minutes ahead). The draft has been idle for 20 s when the
    referrer presses "Versturen" on instance a.
    """
    quick = {"DRAFT_TTL_MINUTES": "1", "SWEEP_INTERVAL_SECONDS": "1"}
    await deployment.start("a", **quick)
    await deployment.start("b", module=SKEWED_BOT, CLOCK_SKEW_SECONDS="45", **quick)
    draft_id = await deployment.to_review("a")
    await asyncio.sleep(20)

    state = await deployment.db.scalar("SELECT state FROM drafts WHERE id = :id", {"id": draft_id})
    assert state == "review", f"a draft idle 20 s of its 60 s is {state}"
    await deployment.send("a", draft_id)
    assert len(await deployment.states()) == 1, "the referral is queued"


async def test_a_clock_stepped_back_does_not_stop_the_draft_sweep_for_the_length_of_the_step(
    deployment: Deployment,
) -> None:
    """README: an unfinished referral left idle DRAFT_TTL_MINUTES is wiped, swept every SWEEP_INTERVAL_SECONDS.

    One instance whose clock was 2 minutes ahead when it started (it claimed the sweep then); NTP steps
    it back to the true time. A draft left idle after that, with a time-to-live of 1 minute and a sweep
    every second, is wiped a few seconds after its minute.
    """
    skew = deployment.folder / "skew"
    skew.write_text("120")
    await deployment.start("a", module=SKEWED_BOT, CLOCK_SKEW_FILE=str(skew), DRAFT_TTL_MINUTES="1",
                           SWEEP_INTERVAL_SECONDS="1")
    await asyncio.sleep(2)  # the sweep ran (and claimed its next period) on the clock as it was
    skew.write_text("0")  # NTP steps the clock back
    draft_id = await deployment.to_review("a")

    async def expired() -> bool:
        return await deployment.db.scalar("SELECT state FROM drafts WHERE id = :id", {"id": draft_id}) == "expired"

    # It stayed in review for the length of the step (2 minutes) before: no longer than its minute and a few seconds.
    await deployment.until(expired, "a draft idle past its time-to-live of 60 s, swept every second, is wiped",
                           seconds=70)


async def test_a_rate_limit_counts_the_clicks_on_both_instances(deployment: Deployment) -> None:
    d = deployment
    await d.start("A", "B", RATE_LIMIT_ACTIONS_PER_MINUTE="5")
    answers = await asyncio.gather(*(d.act(on, REFERRER, "referral.start", {}) for on in ["A", "B"] * 6))

    started = [answer for answer in answers if "referral.consent" in actions(answer)]
    limited = [answer for answer in answers if "Even geduld" in texts(answer)]
    assert (len(started), len(limited)) == (5, 7), answers
    assert "referral.consent" in actions(await d.act("B", COLLEAGUE, "referral.start", {})), "another user may go on"
    assert await d.db.scalar("SELECT COUNT(*) AS n FROM register WHERE event = 'referral_started'") == 6
    verified = d.register_verify()
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert d.client_data_in_logs() == {}


async def test_a_rate_limit_counts_the_clicks_on_both_instances_when_one_clock_is_a_minute_ahead(
    deployment: Deployment,
) -> None:
    """README: rate limits count every instance's clicks (5 actions a minute here), the load balancer
    sending the user's clicks to either instance in turn; instance B's clock is 61 s ahead."""
    await deployment.start("A", RATE_LIMIT_ACTIONS_PER_MINUTE="5")
    await deployment.start("B", module=SKEWED_BOT, CLOCK_SKEW_SECONDS="61", RATE_LIMIT_ACTIONS_PER_MINUTE="5")
    answers = [await deployment.act(on, REFERRER, "referral.start", {}) for on in ["A", "B"] * 6]

    started = [answer for answer in answers if "referral.consent" in actions(answer)]
    assert len(started) == 5, f"{len(started)} of 12 clicks within a few seconds went through"


async def test_a_message_teams_sends_again_to_the_other_instance_runs_once(deployment: Deployment) -> None:
    """Teams' copy of "nieuw" reaches the other instance (after the first, and at the same moment): one
    draft, one consent card, one "referral started"; it ran on both before."""
    d = deployment
    await d.start("A", "B")
    for user, at_once in ((REFERRER, False), (COLLEAGUE, True)):
        start = user.message(d.service_url, "nieuw")
        posts = [d.session.post(f"{d.instances[on].url}/api/messages", json=start) for on in ("A", "B")]
        responses = await asyncio.gather(*posts) if at_once else [await post for post in posts]
        assert [response.status for response in responses] == [202, 202]
    await asyncio.sleep(0.5)  # time for a second consent card to arrive
    consent_cards = [call for call in d.connector.accepted
                     if call.method == "POST" and "referral.consent" in str(call.body)]
    assert len(consent_cards) == 2, [call.path for call in consent_cards]
    assert await d.db.scalar("SELECT COUNT(*) AS n FROM drafts") == 2
    assert await d.db.scalar("SELECT COUNT(*) AS n FROM register WHERE event = 'referral_started'") == 2


async def test_the_copy_of_a_turn_whose_instance_was_killed_runs_on_the_other(deployment: Deployment) -> None:
    """A is killed (SIGKILL) while "nieuw" waits for its reply to reach Teams; Teams' copy goes to B, which runs it
    (the consent card arrives) because A's sessions ended with it. Before, B answered it without a turn. The copy
    that reached B while A still lived was not run (the test above)."""
    d = deployment
    await d.start("A", "B")
    start = REFERRER.message(d.service_url, "nieuw")
    d.connector.holding = True
    first = asyncio.create_task(d.session.post(f"{d.instances['A'].url}/api/messages", json=start))

    async def held() -> bool:
        return d.connector.held >= 1

    await d.until(held, "A's reply held")
    d.instances["A"].process.kill()
    d.instances["A"].process.wait(timeout=10)
    with contextlib.suppress(aiohttp.ClientError):
        (await first).release()
    d.connector.let_go()
    await asyncio.sleep(0.3)  # the held request, now answered to nobody, is recorded before the count
    before = len(d.connector.accepted)
    for _ in range(2):
        async with d.session.post(f"{d.instances['B'].url}/api/messages", json=start) as again:
            assert again.status == 202
    await asyncio.sleep(0.5)  # time for a second consent card to arrive
    consent_cards = [call for call in d.connector.accepted[before:]
                     if call.method == "POST" and "referral.consent" in str(call.body)]
    assert len(consent_cards) == 1, [call.path for call in d.connector.accepted[before:]]


async def _record_job_claims(db: Database) -> None:
    """Every claim of a periodic job (an insert or an update of its `job_runs` row) into `test_job_claims`."""
    await db.execute("CREATE TABLE test_job_claims (name TEXT, started_at TEXT, instance TEXT)")
    await db.execute(
        "CREATE FUNCTION test_record_claim() RETURNS trigger AS $$ BEGIN"
        " INSERT INTO test_job_claims VALUES (NEW.name, NEW.last_started_at, NEW.last_instance); RETURN NEW;"
        " END $$ LANGUAGE plpgsql")
    await db.execute("CREATE TRIGGER test_job_claims AFTER INSERT OR UPDATE ON job_runs FOR EACH ROW"
                     " EXECUTE FUNCTION test_record_claim()")


async def _accepted(d: Deployment, wanted: str, count: int) -> bool:
    return sum(1 for call in d.connector.accepted if kind(call) == wanted) >= count and await d.quiet()


async def _accepted_since(d: Deployment, before: int, count: int) -> bool:
    return len(d.connector.accepted) - before >= count and await d.quiet()


def _sent_twice(calls: list[RecordedCall]) -> list[str]:
    return [key for key, count in Counter(identity(call) for call in calls).items() if count > 1]


async def test_no_correct_value_and_a_correction_sent_at_once_on_two_instances_do_one_of_them(
    deployment: Deployment,
) -> None:
    """The OCMW reported the phone number wrong; the referrer's colleague sends a number on B while the referrer
    says "Er is geen juist telefoonnummer" on A, at the same moment. One of them is done, the other told so: either
    the correction leaves (once) and the OCMW is not asked to delete anything, or the OCMW is asked to delete the
    wrong number and no correction leaves; never both, and the register says which."""
    d = deployment
    await d.start("A", "B")
    reference = await d.refer("A")
    await d.link_ocmw("A")
    await d.until(lambda: d.all_in("sent", [reference]), "the referral is delivered and its card posted")
    await d.act("B", WORKER, "ack.receive", {"reference": reference})
    await d.act("A", WORKER, "referral.quality", {"reference": reference, "item": "phone"})
    await d.until(d.quiet, "the correction card reaches the referrer")
    [request] = [card_verbs(call)["correction.submit"]["correctionId"] for call in d.connector.accepted
                 if "correction.submit" in card_verbs(call)]
    answers = await asyncio.gather(
        d.act("A", REFERRER, "correction.none", {"correctionId": request, "confirmed": "true"}),
        d.act("B", REFERRER, "correction.submit", {"correctionId": request, "phone": "0470 11 22 33"}))
    await d.until(d.quiet, "what was queued is sent")
    await asyncio.sleep(0.5)  # time for a second mail or message to show up
    events = await d.events(reference)
    told_to_delete = [call for call in d.connector.accepted if kind(call) == "none-to-ocmw"]
    corrections = len(d.smtp.messages) - 1
    assert (events["no_correct_value"], len(told_to_delete), corrections) in ((1, 1, 0), (0, 0, 1)), (
        events, len(told_to_delete), corrections, answers)
    said = json.dumps(answers, ensure_ascii=False)
    assert ("al verstuurd" in said) if corrections else ("al gemeld" in said.lower()), answers
    assert _sent_twice(d.connector.accepted) == []
    assert d.client_data_in_logs() == {}
