"""What an operator asks of the running bot, as OpenTelemetry instruments in one typed object.

`create_app` builds one `Metrics` from the process's meter (or the no-op meter when nobody reads
metrics) and hands it to the services that record: no instrument is global. Every attribute is a
protocol id, a verb from the cards' fixed list, a cause from a fixed list, a route as declared, or a
status code: never client data, a user or a reference.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from aiohttp import web
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Meter, NoOpMeter, Observation

import cards
from bot.clock import Clock

METER_NAME = "veilig_doorverwijzen"
#: The request key under which a route says why it answered as it did (`Metrics.http_response`'s `cause`).
ANSWER_CAUSE = web.RequestKey("vd.answer_cause", str)
OutboxName = Literal["mail", "teams"]
ReferralKind = Literal["referral", "correction"]

#: Every card verb there is; a verb from anywhere else is recorded as "other" (it is whatever a client sent).
KNOWN_VERBS: frozenset[str] = frozenset(
    {getattr(cards, name) for name in dir(cards) if name.startswith("VERB_")}
    | cards.VERBS | cards.FOLLOW_UP_VERBS | cards.BREACH_VERBS | {"consent.withdraw"}
)
#: Seconds, from a send click to the mail server's acceptance: instant, a slow relay, retries, the horizon.
_DELIVERY_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
#: Seconds of a turn or a Key Vault read: Teams wants an answer within 5 s.
_FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class Waiting:
    """What waits in one outbox: how many rows, and since when the oldest."""

    count: int
    oldest_queued_at: dt.datetime | None


@dataclass(frozen=True)
class Metrics:
    """The bot's instruments; record through the methods, which keep the attributes to the fixed lists."""

    referrals_started: Counter
    referrals_sent: Counter
    referrals_delivered: Counter
    referrals_failed: Counter
    click_to_delivered: Histogram
    outbox_retries: Counter
    outbox_give_ups: Counter
    key_vault_reads: Histogram
    key_vault_failures: Counter
    turns: Histogram
    turn_waits: Histogram
    http_responses: Counter
    auth_refusals: Counter
    auth_unavailability: Counter

    @classmethod
    def from_meter(cls, meter: Meter) -> Metrics:
        return cls(
            referrals_started=meter.create_counter(
                "vd.referrals.started", unit="{referral}", description="referrals begun (nieuw / referral.start)"),
            referrals_sent=meter.create_counter(
                "vd.referrals.sent", unit="{referral}", description="packages queued for the mail (Versturen)"),
            referrals_delivered=meter.create_counter(
                "vd.referrals.delivered", unit="{referral}", description="mails the mail system accepted"),
            referrals_failed=meter.create_counter(
                "vd.referrals.failed", unit="{referral}", description="mails given up on: the referrer was told"),
            click_to_delivered=meter.create_histogram(
                "vd.referrals.click_to_delivered", unit="s", description="from the send click to the mail accepted",
                explicit_bucket_boundaries_advisory=_DELIVERY_BUCKETS),
            outbox_retries=meter.create_counter(
                "vd.outbox.retries", unit="{attempt}", description="sends that failed for now and wait to be retried"),
            outbox_give_ups=meter.create_counter(
                "vd.outbox.give_ups", unit="{message}", description="mails and Teams messages given up on"),
            key_vault_reads=meter.create_histogram(
                "vd.keyvault.read.duration", unit="s", description="one read of a ZIP password secret",
                explicit_bucket_boundaries_advisory=_FAST_BUCKETS),
            key_vault_failures=meter.create_counter(
                "vd.keyvault.read.failures", unit="{read}", description="Key Vault reads that failed"),
            turns=meter.create_histogram(
                "vd.turn.duration", unit="s", description="a Teams turn: a typed message or a card action",
                explicit_bucket_boundaries_advisory=_FAST_BUCKETS),
            turn_waits=meter.create_histogram(
                "vd.turn.wait", unit="s", description="how long a turn waited for a place (TURNS_AT_ONCE)",
                explicit_bucket_boundaries_advisory=_FAST_BUCKETS),
            http_responses=meter.create_counter(
                "vd.http.responses", unit="{response}", description="HTTP answers by route and status code"),
            auth_refusals=meter.create_counter(
                "vd.auth.refused", unit="{request}",
                description="requests the Bot Framework signed that the bot refused (401), by reason"),
            auth_unavailability=meter.create_counter(
                "vd.auth.unavailable", unit="{request}",
                description="requests answered 503 because the Bot Framework's signing keys could not be fetched"),
        )

    @classmethod
    def disabled(cls) -> Metrics:
        """Instruments that record nothing and cost a function call: nobody reads metrics."""
        return cls.from_meter(NoOpMeter(METER_NAME))

    def referral_started(self, protocol_id: str) -> None:
        self.referrals_started.add(1, {"protocol": protocol_id})

    def referral_sent(self, protocol_id: str, kind: ReferralKind) -> None:
        self.referrals_sent.add(1, {"protocol": protocol_id, "kind": kind})

    def referral_delivered(self, protocol_id: str, kind: ReferralKind, since_click: dt.timedelta) -> None:
        attributes = {"protocol": protocol_id, "kind": kind}
        self.referrals_delivered.add(1, attributes)
        self.click_to_delivered.record(max(0.0, since_click.total_seconds()), attributes)

    def referral_failed(self, protocol_id: str, kind: ReferralKind, cause: str) -> None:
        self.referrals_failed.add(1, {"protocol": protocol_id, "kind": kind, "cause": cause})

    def retry(self, outbox: OutboxName, cause: str) -> None:
        self.outbox_retries.add(1, {"outbox": outbox, "cause": cause})

    def give_up(self, outbox: OutboxName, cause: str) -> None:
        self.outbox_give_ups.add(1, {"outbox": outbox, "cause": cause})

    def key_vault_read(self, seconds: float, failure: str | None) -> None:
        """One read of a secret: how long, and why it failed (None: it did not)."""
        self.key_vault_reads.record(seconds, {"outcome": failure or "ok"})
        if failure is not None:
            self.key_vault_failures.add(1, {"cause": failure})

    def turn(self, verb: str, seconds: float) -> None:
        """A turn; `verb` is a card verb (others become "other") or "message"."""
        label = verb if verb in KNOWN_VERBS or verb == "message" else "other"
        self.turns.record(seconds, {"verb": label})

    def turn_waited(self, seconds: float) -> None:
        """Before a turn ran: its wait for one of the `TURNS_AT_ONCE` places (0 when one was free)."""
        self.turn_waits.record(seconds)

    def auth_refused(self, reason: str) -> None:
        """A token the Bot Framework's key signed, refused for `reason` (audience, issuer, time, ...)."""
        self.auth_refusals.add(1, {"reason": reason})

    def auth_unavailable(self) -> None:
        """A request answered 503 (Teams sends it again) because the signing keys could not be had in time."""
        self.auth_unavailability.add(1)

    def http_response(self, route: str, method: str, status: int, *, cause: str | None = None) -> None:
        """An answer; `cause` (from a fixed list, `ANSWER_CAUSE`) names why, when the status alone would mislead.

        A 503 while the Bot Framework's signing keys cannot be fetched is no failure of the bot: the
        *server-errors* alert leaves the answers with that cause out, and an alert of its own counts them.
        """
        attributes: dict[str, str | int] = {"http.route": route, "http.request.method": method,
                                            "http.response.status_code": status, "status_class": f"{status // 100}xx"}
        if cause is not None:
            attributes["cause"] = cause
        self.http_responses.add(1, attributes)


class OutboxReadings:
    """How many mails and Teams messages wait, read from the database at most once per export interval.

    OpenTelemetry asks observable gauges from its own thread, at every collection of every reader; the
    database is async and shared by every instance. So `refresh` (on the event loop, once per
    interval) reads both outboxes in two small aggregate queries, and the gauges report that reading;
    the age of the oldest item is counted from the reading to the moment it is reported.
    """

    def __init__(self, read: Callable[[], Awaitable[Mapping[OutboxName, Waiting]]], clock: Clock) -> None:
        self._read = read
        self._clock = clock
        self._latest: Mapping[OutboxName, Waiting] = {}

    def register(self, meter: Meter) -> None:
        """Create the two gauges on `meter`, reporting this object's readings."""
        meter.create_observable_gauge("vd.outbox.depth", [self._depth], unit="{item}",
                                      description="mails and Teams messages waiting to be sent")
        meter.create_observable_gauge("vd.outbox.oldest_age", [self._oldest_age], unit="s",
                                      description="how long the oldest waiting item has waited")

    async def refresh(self) -> None:
        self._latest = dict(await self._read())

    def _depth(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(waiting.count, {"outbox": name}) for name, waiting in self._latest.items()]

    def _oldest_age(self, _: CallbackOptions) -> Iterable[Observation]:
        now = self._clock.now()
        return [
            Observation(0.0 if waiting.oldest_queued_at is None else
                        max(0.0, (now - waiting.oldest_queued_at).total_seconds()), {"outbox": name})
            for name, waiting in self._latest.items()
        ]

