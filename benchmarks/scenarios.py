"""The scenarios: one request at a time over real HTTP, the bot process's CPU read around them.

Every answer is checked (status, card, next verb): a build that fails its turns must not look
cheap. Message turns are also checked at the connector stand-in, since botbuilder answers 201
even when the turn raised.

Referrals run one after the other, each with a user of its own. The background delivery of a
referral would otherwise overlap the next referral's invokes and be counted with them, so after
each `referral.send` the harness waits until that referral's `.eml` is in the outbox and the bot
has gone quiet (the referrer's card edit and "delivered" message done: the harness waits for the message at
the connector, since they go out a moment after the mail), outside the window of
the invokes. "whole referral" is the CPU of the 4 invokes, from before `referral.start` to the
answer of `referral.send`; "incl. delivery" runs on to that quiet point.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.activities import (
    CLIENT_FORM,
    CONSENT_ALL,
    PROTOCOL_ID,
    BenchUser,
    draft_id,
    execute_actions,
    invoke_card,
)
from benchmarks.connector_standin import STATS_PATH
from benchmarks.processes import Process

MESSAGE = "message turn"
CARD = "card action"
REFERRAL = "whole referral, 4 invokes"
REFERRAL_DELIVERY = "whole referral incl. delivery"
#: What one measured operation is, per scenario row.
UNITS = {MESSAGE: "turn", CARD: "turn", REFERRAL: "referral", REFERRAL_DELIVERY: "referral"}
USERS_PER_BOT = 64
DELIVERY_TIMEOUT_SECONDS = 30.0
REPLY_TIMEOUT_SECONDS = 10.0
#: The bot counts as quiet once its CPU time grows by less than this over QUIET_SECONDS.
QUIET_NS = 200_000
QUIET_SECONDS = 0.03


class ScenarioError(Exception):
    """A build answered wrongly: the numbers would be meaningless."""


@dataclass
class Sample:
    """One scenario, one build, one round: CPU per operation and the wall time of each operation."""

    cpu_ns: int
    operations: int
    latencies: list[float]

    @property
    def cpu_ms_per_op(self) -> float:
        return self.cpu_ns / self.operations / 1e6


@dataclass
class Target:
    """A running build as the scenarios drive it.

    Delivery is seen in its `.eml` outbox folder, or, with `MAIL_TRANSPORT=smtp`, by `mail_count`
    (the mails the benchmark's SMTP server accepted so far).
    """

    name: str
    process: Process
    outbox: Path | None
    mail_count: Callable[[], Awaitable[int]] | None = None
    _referral_users: itertools.count[int] = field(default_factory=itertools.count)
    _users: list[BenchUser] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._users = [BenchUser.numbered(self.name, n) for n in range(USERS_PER_BOT)]

    def user(self, index: int) -> BenchUser:
        """Message and card-action users are reused round robin (they keep no open dialogue)."""
        return self._users[index % len(self._users)]

    def new_referral_user(self) -> BenchUser:
        return BenchUser.numbered(f"{self.name}-referral", next(self._referral_users))


class Driver:
    """The load generator: one aiohttp session, one request in flight."""

    def __init__(self, session: aiohttp.ClientSession, connector_url: str) -> None:
        self._session = session
        self._connector_url = connector_url
        self.service_url = connector_url

    async def _post(self, target: Target, activity: dict[str, Any]) -> tuple[int, bytes]:
        async with self._session.post(f"{target.process.url}/api/messages", json=activity) as response:
            return response.status, await response.read()

    async def connector_posts(self) -> int:
        async with self._session.get(f"{self._connector_url}{STATS_PATH}") as response:
            counts: dict[str, int] = await response.json()
        return counts.get("POST", 0)

    async def timed(
        self, target: Target, count: int, one: Callable[[int], Awaitable[None]],
        settle: Callable[[], Awaitable[None]] | None = None,
    ) -> Sample:
        """`count` calls of `one`, each timed; the CPU window ends after `settle` (work the answers left behind)."""
        latencies = []
        cpu_before = target.process.cpu.ns()
        for index in range(count):
            started = time.perf_counter()
            await one(index)
            latencies.append(time.perf_counter() - started)
        if settle is not None:
            await settle()
        return Sample(target.process.cpu.ns() - cpu_before, count, latencies)

    async def message_turns(self, target: Target, count: int) -> Sample:
        """`hulp` as a message: the bot replies once through the connector (HTTP 201 or 202, no body).

        The window ends when all `count` replies reached the connector: an SDK that answers 202
        before its turn is done still has all its work counted.
        """
        async def one(index: int) -> None:
            status, body = await self._post(target, target.user(index).message(self.service_url, "hulp"))
            if not 200 <= status < 300:
                raise ScenarioError(f"{target.name}: message turn answered {status}: {body[:300]!r}")

        async def replies_arrived() -> None:
            deadline = time.monotonic() + REPLY_TIMEOUT_SECONDS
            while (replies := await self.connector_posts() - posts_before) < count:
                if time.monotonic() > deadline:
                    raise ScenarioError(
                        f"{target.name}: {count} message turns but only {replies} replies reached the connector "
                        f"(a failed turn still answers 2xx); bot log:\n{target.process.log_tail()}"
                    )
                await asyncio.sleep(0.001)

        posts_before = await self.connector_posts()
        return await self.timed(target, count, one, replies_arrived)

    async def card_action(self, target: Target, user: BenchUser, verb: str, data: dict[str, Any]) -> dict[str, Any]:
        """An `adaptiveCard/action` invoke; returns the card of the 200 answer."""
        status, body = await self._post(target, user.card_action(self.service_url, verb, data))
        card = None
        if status == 200:
            try:
                card = invoke_card(json.loads(body))
            except ValueError:
                card = None
        if card is None:
            raise ScenarioError(f"{target.name}: {verb} answered {status} without a card: {body[:300]!r}")
        return card

    async def card_actions(self, target: Target, count: int) -> Sample:
        """`referral.start` with `{}`: answered in the HTTP response with the consent card."""
        async def one(index: int) -> None:
            card = await self.card_action(target, target.user(index), "referral.start", {})
            _expect(target, card, "referral.start", "referral.consent")

        return await self.timed(target, count, one)

    async def referrals(self, target: Target, count: int) -> tuple[Sample, Sample]:
        """`count` whole referrals: (the 4 invokes, the 4 invokes plus delivery) per referral."""
        if target.outbox is None and target.mail_count is None:
            raise ScenarioError(f"{target.name}: no outbox folder or SMTP server to watch")
        invokes = Sample(0, 0, [])
        delivered = Sample(0, 0, [])
        for _ in range(count):
            expected = await _mails(target) + 1
            notices = await self.connector_posts() + 1
            user = target.new_referral_user()
            cpu_start = target.process.cpu.ns()
            started = time.perf_counter()
            await self._one_referral(target, user)
            invokes.latencies.append(time.perf_counter() - started)
            invokes.cpu_ns += target.process.cpu.ns() - cpu_start
            await _wait_for_mail(target, expected)
            delivered.latencies.append(time.perf_counter() - started)
            await self._wait_for_posts(target, notices)
            await wait_quiet(target.process)
            delivered.cpu_ns += target.process.cpu.ns() - cpu_start
            invokes.operations += 1
            delivered.operations += 1
        return invokes, delivered

    async def _wait_for_posts(self, target: Target, expected: int, within: float = DELIVERY_TIMEOUT_SECONDS) -> None:
        """Until the connector has `expected` posts: the referrer's "delivered" notice, the last thing the bot does
        for a referral, goes out a moment after the mail (`TEAMS_CLICK_REPLY_SECONDS`); the bot is quiet before it."""
        deadline = time.monotonic() + within
        while await self.connector_posts() < expected:
            if time.monotonic() > deadline:
                raise ScenarioError(f"{target.name}: the referrer's notice not posted after {within:.0f} s")
            await asyncio.sleep(0.01)

    async def _one_referral(self, target: Target, user: BenchUser) -> dict[str, Any]:
        """start, consent, details, send; returns the card `referral.send` answered with."""
        consent = await self.card_action(target, user, "referral.start", {})
        _expect(target, consent, "referral.start", "referral.consent")
        draft = draft_id(consent)
        if draft is None:
            raise ScenarioError(f"{target.name}: the consent card carries no draftId")
        details = await self.card_action(
            target, user, "referral.consent", {"draftId": draft, "ocmw": PROTOCOL_ID, **CONSENT_ALL}
        )
        _expect(target, details, "referral.consent", "referral.details")
        review = await self.card_action(target, user, "referral.details", {"draftId": draft, **CLIENT_FORM})
        _expect(target, review, "referral.details", "referral.send")
        return await self.card_action(target, user, "referral.send", {"draftId": draft})


def _expect(target: Target, card: dict[str, Any], verb: str, next_verb: str) -> None:
    if next_verb not in execute_actions(card):
        raise ScenarioError(
            f"{target.name}: after {verb} expected a card with {next_verb}, got verbs "
            f"{sorted(execute_actions(card))}"
        )


def _eml_count(outbox: Path) -> int:
    try:
        return sum(1 for entry in outbox.iterdir() if entry.suffix == ".eml")
    except FileNotFoundError:
        return 0


async def _mails(target: Target) -> int:
    """The mails delivered so far: at the SMTP server, or as `.eml` files."""
    if target.mail_count is not None:
        return await target.mail_count()
    return _eml_count(target.outbox) if target.outbox is not None else 0


async def _wait_for_mail(target: Target, expected: int, within: float = DELIVERY_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + within
    while await _mails(target) < expected:
        if time.monotonic() > deadline:
            where = "at the SMTP server" if target.mail_count is not None else f"in {target.outbox}"
            raise ScenarioError(
                f"{target.name}: mail number {expected} not {where} after {within:.0f} s; "
                f"bot log:\n{target.process.log_tail()}"
            )
        await asyncio.sleep(0.001)


async def wait_for_mail(target: Target, expected: int, within: float) -> None:
    """Until `expected` mails were delivered in all (ScenarioError after `within` seconds)."""
    await _wait_for_mail(target, expected, within)


async def timed_at_once(target: Target, count: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> Sample:
    """`count` calls of `one` by `concurrency` workers at once, each call timed; the process's CPU over them all."""
    latencies: list[float] = []
    indexes = iter(range(count))

    async def worker() -> None:
        for index in indexes:
            started = time.perf_counter()
            await one(index)
            latencies.append(time.perf_counter() - started)

    cpu_before = target.process.cpu.ns()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Sample(target.process.cpu.ns() - cpu_before, count, latencies)


async def until_answered(process: Process, answered: Callable[[Process], Awaitable[bool]], within: float = 90) -> None:
    """Poll every 10 ms until `answered(process)`; the process must not die meanwhile."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise ScenarioError(f"{process.name} exited with {process.popen.returncode}:\n{process.log_tail()}")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            if await answered(process):
                return
        await asyncio.sleep(0.01)
    raise ScenarioError(f"{process.name}: not ready within {within:.0f} s:\n{process.log_tail()}")


async def wait_quiet(process: Process, within: float = 10.0) -> None:
    """Until the process's CPU time grows by less than QUIET_NS in QUIET_SECONDS, at most `within` s."""
    deadline = time.monotonic() + within
    quiet_since, cpu_then = time.monotonic(), process.cpu.ns()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.005)
        now, cpu_now = time.monotonic(), process.cpu.ns()
        if cpu_now - cpu_then > QUIET_NS:
            quiet_since, cpu_then = now, cpu_now
        elif now - quiet_since >= QUIET_SECONDS:
            return
