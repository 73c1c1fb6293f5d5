"""Wires the bot together: `create_app(settings)` is the only place objects are built."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler

import cards
from bot.clock import Clock, SystemClock
from bot.config import ConfigError, Settings
from bot.core.metrics import OutboxName, OutboxReadings, Waiting
from bot.core.protocols import DataSharingProtocol, ProtocolFolder, ProtocolRegistry
from bot.core.sent_referrals import ReferralStore
from bot.delivery.chat_messages import MessageContent
from bot.delivery.mail_delivery import DeliveryWorker, RetryPolicy
from bot.delivery.mail_outbox import Outbox
from bot.delivery.mail_transport import MailTransport, sent_copies
from bot.delivery.message_delivery import MessageDeliveryPolicy, MessageDeliveryWorker
from bot.delivery.message_outbox import MessageOutbox
from bot.evidence.register import ProcessingRegister
from bot.ocmw.actions import OcmwService
from bot.ocmw.corrections import CorrectionService
from bot.ocmw.links import OcmwLinks
from bot.ocmw.refusal_bursts import RefusalBursts
from bot.ocmw.reminders import ReminderService
from bot.ocmw.status import StatusService
from bot.operations.http_telemetry import request_telemetry
from bot.operations.telemetry import Telemetry
from bot.oversight.breach import BreachService
from bot.oversight.register_export import RegisterExports, download_route
from bot.oversight.residue import ResidueSweeper
from bot.oversight.retention import RetentionService
from bot.referral.dialogue import ReferralDialogue, personal_chat_url
from bot.referral.drafts import DraftStore, ShownCard
from bot.referral.information_sheet import sheet_routes
from bot.referral.referrers import MembershipChecker, ReferrerAccess
from bot.referral.sending import ReferralSender
from bot.router import LINK_LIMIT, Router
from bot.secrets.draft_cipher import DraftCipher
from bot.secrets.zip_passwords import ZipPasswordError, ZipPasswordProvider
from bot.storage.activity_receipts import ActivityReceipts, new_holder_name
from bot.storage.database import Database
from bot.storage.database_clock import DatabaseClock
from bot.storage.periodic_jobs import PeriodicJobs
from bot.storage.rate_limits import RateLimit, RateLimiter
from bot.storage.schema_migration import require_current_schema
from bot.storage.write_readiness import write_refusal
from bot.teams.channel import build_teams_channel
from bot.teams.connector import ConnectorTokenSource
from bot.teams.route import MAX_BODY_BYTES
from bot.wiring import (
    Closer,
    build_database,
    build_mail_transport,
    build_membership_checker,
    build_password_provider,
    once_database_reachable,
)

if TYPE_CHECKING:
    from bot.operations.metrics_endpoint import LocalMetricsView

logger = logging.getLogger(__name__)
#: The `Server` header of every answer.
SERVER_NAME = "veilig-doorverwijzen"

#: How often the protocols folder is looked at when nobody talks to the bot (every request looks too).
PROTOCOL_CHECK_SECONDS = 60.0
#: How often what is past its retention period is removed (the periods are days and years).
RETENTION_INTERVAL = dt.timedelta(hours=1)
#: How long `/readyz` waits for a ZIP password that is not in the cache yet: a probe must not hang on the vault.
READY_PASSWORD_WAIT_SECONDS = 2.0
#: How long `/readyz` waits for the database.
READY_DATABASE_WAIT_SECONDS = 2.0
#: On a stop (SIGTERM: a deploy, a scale-in), how long the mails and Teams messages being sent may take
#: to finish and be recorded: a send cut off after the relay took the mail goes out again after the
#: restart. Well within the 30 s the web app gives between SIGTERM and SIGKILL
#: (`WEBSITES_CONTAINER_STOP_TIME_LIMIT` in infra/modules/webapp.bicep).
STOP_DRAIN_SECONDS = 10.0


@dataclass(frozen=True)
class Services:
    """What the running app holds, reachable from tests and commands through `app[SERVICES_KEY]`."""

    settings: Settings
    db: Database
    registry: ProtocolRegistry
    drafts: DraftStore
    referrals: ReferralStore
    register: ProcessingRegister
    outbox: Outbox
    dialogue: ReferralDialogue
    worker: DeliveryWorker
    passwords: ZipPasswordProvider
    transport: MailTransport
    links: OcmwLinks
    messages: MessageOutbox
    message_worker: MessageDeliveryWorker
    reminders: ReminderService
    protocols: ProtocolFolder
    retention: RetentionService
    jobs: PeriodicJobs
    telemetry: Telemetry
    #: How many mails and Teams messages wait (the outbox gauges), read once per export interval.
    outbox_readings: OutboxReadings
    #: The local `/metrics` listener (`METRICS_PORT`), None when off; its `url` is set once it listens.
    metrics_view: LocalMetricsView | None = None
    closers: list[Closer] = field(default_factory=list)


SERVICES_KEY = web.AppKey("services", Services)


async def _name_the_server(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer names the service, not the software and its version (aiohttp's default `Server` header
    would tell anyone which known flaws to try). Set, not removed: aiohttp fills in a missing one."""
    response.headers["Server"] = SERVER_NAME


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    transport: MailTransport | None = None,
    passwords: ZipPasswordProvider | None = None,
    connector_token: ConnectorTokenSource | None = None,
    draft_key: bytes | None = None,
    run_worker: bool = True,
    membership: MembershipChecker | None = None,
    migrate: bool | None = None,
    instance: str | None = None,
    telemetry: Telemetry | None = None,
    stop_drain_seconds: float = STOP_DRAIN_SECONDS,
) -> web.Application:
    """Build the aiohttp application; fails fast on a bad protocol file or data folder.

    With `BOT_ENV=production` every protocol file must name who may refer under it.
    `clock`, `transport`, `passwords`, `connector_token` and `membership` replace what the settings would build
    (tests; the clock is otherwise the database server's time on PostgreSQL, `DatabaseClock`, the system's on SQLite);
    `run_worker=False` leaves both outboxes to the test, which calls their workers' `deliver_due()`.
    At start the database's schema must be this version's: `migrate` brings it there first (by
    default for the embedded SQLite file, which only this process uses; for PostgreSQL a
    migration is a deployment step, `python -m bot migrate`). `instance` names this process in
    `job_runs`, its database sessions and its turns in progress (default: random; unique among the instances).
    `telemetry` is where metrics, spans and logs go (`serve` builds it from
    the settings; default: off). On a stop the mails and messages being sent get `stop_drain_seconds`
    to finish.
    """
    telemetry = telemetry or Telemetry.off()
    metrics = telemetry.metrics
    protocols = ProtocolFolder(settings.protocols_dir, require_referrers=settings.environment == "production")
    registry = protocols.registry  # shared by every service; rereading the folder changes it in place
    closers: list[Closer] = []
    if not settings.database.is_postgres:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.data_dir.chmod(0o700)
    instance = instance or new_holder_name()  # one name: its job runs, turns in progress and database sessions
    db = build_database(settings, closers, application_name=instance)
    telemetry.instrument_database(db)
    # Instances on one PostgreSQL compare the times they store (leases, idle drafts, job runs, rate windows):
    # they share the server's time, never each one's own wall clock.
    shared_time = DatabaseClock(db) if clock is None and settings.database.is_postgres else None
    clock = clock or shared_time or SystemClock()
    cipher = _draft_cipher(settings, draft_key)
    drafts = DraftStore(db, cipher, settings.draft_ttl)
    referrals = ReferralStore(db)
    register = ProcessingRegister(db)
    outbox = Outbox(db)
    messages = MessageOutbox(db)
    passwords = passwords or build_password_provider(settings, clock, closers, metrics)
    transport = transport or build_mail_transport(settings, closers)
    referrers = ReferrerAccess(membership or build_membership_checker(settings, closers), clock=clock,
                               cache_ttl=settings.membership.cache)
    links = OcmwLinks(db)
    residue = ResidueSweeper(db=db, referrals=referrals, copies=sent_copies(transport))
    sender = ReferralSender(
        db=db,
        passwords=passwords,
        outbox=outbox,
        drafts=drafts,
        referrals=referrals,
        register=register,
        clock=clock,
        timezone=settings.timezone,
        mail_from=settings.mail_from,
        metrics=metrics,
    )
    dialogue = ReferralDialogue(
        registry=registry,
        drafts=drafts,
        db=db,
        register=register,
        sender=sender,
        referrers=referrers,
        clock=clock,
        timezone=settings.timezone,
        chat_url=personal_chat_url(settings.identity.app_id),
        public_base_url=settings.public_base_url,
        metrics=metrics,
    )
    corrections = CorrectionService(
        db=db,
        referrals=referrals,
        registry=registry,
        register=register,
        sender=sender,
        messages=messages,
        referrers=referrers,
        links=links,
        clock=clock,
        timezone=settings.timezone,
    )
    retention = RetentionService(db=db, registry=registry, register=register,
                                 copies=sent_copies(transport), clock=clock, timezone=settings.timezone)
    refusals = RefusalBursts(db)
    ocmw = OcmwService(
        db=db,
        links=links,
        referrals=referrals,
        registry=registry,
        register=register,
        corrections=corrections,
        messages=messages,
        outbox=outbox,
        clock=clock,
        timezone=settings.timezone,
        channels=settings.ocmw_channels,
        refusals=refusals,
        referrers=referrers,
        after_deletion=residue.data_deleted,
    )
    worker = DeliveryWorker(
        db=db,
        outbox=outbox,
        transport=transport,
        referrals=referrals,
        register=register,
        registry=registry,
        messages=messages,
        clock=clock,
        timezone=settings.timezone,
        policy=RetryPolicy(settings.delivery.initial, settings.delivery.maximum, settings.delivery.horizon,
                           settings.delivery.lease),
        click_reply_lands=settings.click_reply_lands,
        after_delivery=ocmw.queue_referral_card,
        after_failure=corrections.reopen,
        answered_since=corrections.answered_since,
        metrics=metrics,
    )
    outbox.on_queued = worker.wake
    sender.before_queue = worker.room
    reminders = ReminderService(
        db=db,
        referrals=referrals,
        links=links,
        registry=registry,
        messages=messages,
        clock=clock,
        timezone=settings.timezone,
        working_days=settings.reminder_working_days,
    )
    register_exports = RegisterExports(db=db, register=register, registry=registry, clock=clock,
                                       timezone=settings.timezone, public_base_url=settings.public_base_url)
    limiter = RateLimiter(db, {
        "starts": RateLimit(settings.starts_per_hour, dt.timedelta(hours=1)),
        "actions": RateLimit(settings.actions_per_minute, dt.timedelta(minutes=1)),
        "link_user": LINK_LIMIT,
        "link_conversation": LINK_LIMIT,
    })
    router = Router(
        dialogue=dialogue,
        ocmw=ocmw,
        corrections=corrections,
        status=StatusService(referrals=referrals, registry=registry, messages=messages, timezone=settings.timezone),
        register_exports=register_exports,
        referrers=settings.referrers,
        limiter=limiter,
        clock=clock,
        draft_minutes=drafts.idle_minutes,
        breach=BreachService(db=db, registry=registry, referrals=referrals, links=links,
                             register=register, outbox=outbox, referrers=settings.referrers, clock=clock,
                             timezone=settings.timezone, mail_from=settings.mail_from),
    )
    # On SQLite only this process serves the data folder: a turn in progress from before it started was a dead one's.
    receipts = ActivityReceipts(db, instance, None if settings.database.is_postgres else clock.now())
    channel = build_teams_channel(settings.identity, router, openid_metadata_url=settings.openid_metadata_url,
                                  connector_token=connector_token, metrics=metrics,
                                  turns_at_once=settings.turns_at_once, receipts=receipts, clock=clock)
    message_worker = MessageDeliveryWorker(
        outbox=messages,
        sender=channel.sender,
        clock=clock,
        policy=MessageDeliveryPolicy(
            RetryPolicy(settings.message_retry.initial, settings.message_retry.maximum, settings.delivery.horizon),
            lease=settings.delivery.lease,
        ),
        metrics=metrics,
    )
    messages.on_queued, messages.on_queued_later = message_worker.wake, message_worker.look_again
    closers.append(channel.close)
    jobs = PeriodicJobs(db, clock, instance)

    async def read_outboxes() -> dict[OutboxName, Waiting]:
        return {"mail": Waiting(*await outbox.waiting()), "teams": Waiting(*await messages.waiting())}

    readings = OutboxReadings(read_outboxes, clock)
    if telemetry.records_metrics:
        readings.register(telemetry.meter)
    metrics_view = None
    if telemetry.local_view is not None and settings.telemetry.metrics_port is not None:
        from bot.operations.metrics_endpoint import LocalMetricsView  # with the SDK: only when the view is on

        metrics_view = LocalMetricsView(telemetry.local_view, settings.telemetry.metrics_host,
                                        settings.telemetry.metrics_port)

    @web.middleware
    async def reread_protocols(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every request sees the protocol files as they are now (a few `stat` calls when nothing changed)."""
        protocols.reload_if_changed()
        return await handler(request)

    app = web.Application(client_max_size=MAX_BODY_BYTES,
                          middlewares=[request_telemetry(telemetry.tracer, metrics), reread_protocols])
    app.on_response_prepare.append(_name_the_server)
    app[SERVICES_KEY] = Services(
        settings=settings,
        db=db,
        registry=registry,
        drafts=drafts,
        referrals=referrals,
        register=register,
        outbox=outbox,
        dialogue=dialogue,
        worker=worker,
        passwords=passwords,
        transport=transport,
        links=links,
        messages=messages,
        message_worker=message_worker,
        reminders=reminders,
        protocols=protocols,
        retention=retention,
        jobs=jobs,
        telemetry=telemetry,
        outbox_readings=readings,
        metrics_view=metrics_view,
        closers=closers,
    )

    async def readyz(_: web.Request) -> web.Response:
        return await _readyz(db, protocols, passwords, clock, settings)

    app.add_routes([channel.route, web.get("/healthz", _healthz), web.get("/readyz", readyz),
                    download_route(register_exports),
                    *sheet_routes(registry, settings.public_base_url)])

    def protocols_in_force() -> list[DataSharingProtocol]:
        return registry.in_force_on(clock.now().astimezone(settings.timezone).date())

    async def sweep() -> None:
        now = clock.now()
        await release_interrupted_sends(db, drafts, messages, clock)
        await sweep_drafts(drafts, messages, clock)
        await residue.sweep()
        await register_exports.purge_expired()
        await limiter.prune(now)
        await refusals.prune(now)
        await receipts.prune(now)

    async def run_background(_: web.Application) -> AsyncIterator[None]:
        embedded = not settings.database.is_postgres
        # Waited for while the database cannot be reached, before anything listens: the instance starts once it
        # answers, where it ended with a traceback and was started again and again. A schema behind or ahead
        # still ends the start (`SchemaOutOfDate`, one line and exit 2).
        await once_database_reachable(
            lambda: require_current_schema(db, migrate_if_behind=embedded if migrate is None else migrate))
        if shared_time is not None:  # before anything compares a time another instance stored
            await shared_time.align()
        if run_worker and embedded:  # this process owns the data folder: a send still marked is a dead one
            await release_interrupted_sends(db, drafts, messages, clock, idle_for=None)
            await requeue_cut_off_sends(outbox, messages)
        await residue.sweep()  # before the first request: mail copies a crash left after a deletion go first
        # The ZIP passwords first: fetched now and refreshed before they expire, without holding up the start.
        tasks = [asyncio.create_task(passwords.keep_warm(protocols_in_force)),
                 asyncio.create_task(jobs.every("sweep", settings.sweep_interval, sweep)),
                 asyncio.create_task(_every(PROTOCOL_CHECK_SECONDS, _reread))]
        if shared_time is not None:
            tasks.append(asyncio.create_task(shared_time.keep_aligned()))
        if telemetry.records_metrics:  # the outboxes are read once per export interval, not per collection
            tasks.append(asyncio.create_task(_every(telemetry.export_interval.total_seconds(), readings.refresh)))
        if metrics_view is not None:
            await metrics_view.start()
        draining: list[asyncio.Task[None]] = []
        if run_worker:
            draining = [asyncio.create_task(worker.run()), asyncio.create_task(message_worker.run())]
            tasks.extend(draining)
            tasks.append(asyncio.create_task(jobs.every("reminders", settings.sweep_interval, reminders.run_due)))
            tasks.append(asyncio.create_task(jobs.every("retention", RETENTION_INTERVAL, retention.prune)))
        yield
        worker.stop()  # what is being sent is sent and recorded, within the drain time; nothing new is taken
        message_worker.stop()
        if draining:
            _done, late = await asyncio.wait(draining, timeout=stop_drain_seconds)
            if late:
                logger.warning("stopping: a send took longer than %.0f s and was cut off; it goes again at the "
                               "next start (SQLite) or after its lease", stop_drain_seconds)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if metrics_view is not None:
            await metrics_view.stop()
        for close in closers:
            await close()
        await db.close()

    async def _reread() -> None:
        protocols.reload_if_changed()

    app.cleanup_ctx.append(run_background)
    return app


def _draft_cipher(settings: Settings, draft_key: bytes | None) -> DraftCipher:
    """The draft key: given (Key Vault, read by `serve`), from `LOCAL_DRAFT_KEY`, or (SQLite only) a file."""
    key = draft_key or settings.local_draft_key
    if key is not None:
        return DraftCipher(key)
    if settings.database.is_postgres:
        raise ConfigError("with DATABASE_URL the draft key comes from Key Vault (KEY_VAULT_URL) or, for a local run, "
                          "LOCAL_DRAFT_KEY: an instance's own key file would seal drafts the others cannot open")
    return DraftCipher.from_key_file(settings.data_dir / "draft.key")


async def _healthz(_: web.Request) -> web.Response:
    """The process is alive (App Service / container health check)."""
    return web.json_response({"status": "ok"})


async def _readyz(
    db: Database,
    protocols: ProtocolFolder,
    passwords: ZipPasswordProvider,
    clock: Clock,
    settings: Settings,
) -> web.Response:
    """Ready for referrals: storage answers and takes writes, a protocol is in force, their ZIP passwords can be had.

    The passwords are kept warm, so this normally answers from the cache; when one is not there
    yet, it waits for the running fetch only briefly (which goes on regardless). A protocol file
    that became bad is shown (`protocol_files`) without making the bot unready: it goes on serving
    the protocols it read before, which is what it should do until someone fixes the file.
    """
    registry = protocols.registry
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(READY_DATABASE_WAIT_SECONDS):
            refusal = await write_refusal(db)
        checks["storage"] = "ok" if refusal is None else f"failed: writes refused ({refusal})"
    except Exception as error:  # whatever the driver raises, the probe says "not ready"
        checks["storage"] = f"failed: {type(error).__name__}"
    in_force = registry.in_force_on(clock.now().astimezone(settings.timezone).date())
    checks["protocols"] = f"ok: {len(in_force)} in force" if in_force else "failed: none in force today"
    if in_force:
        try:
            async with asyncio.timeout(READY_PASSWORD_WAIT_SECONDS):
                await asyncio.gather(*(passwords.password_for(protocol) for protocol in in_force))
            checks["secret_provider"] = "ok"  # noqa: S105  # nosec B105
        except (ZipPasswordError, TimeoutError) as error:
            checks["secret_provider"] = f"failed: {type(error).__name__}"
    ready = all(value.startswith("ok") for value in checks.values())
    checks["protocol_files"] = "ok" if protocols.problem is None else (
        f"stale: {protocols.problem}; the protocols read before stay in use")
    return web.json_response({"status": "ready" if ready else "not ready", "checks": checks},
                             status=200 if ready else 503)


#: A send takes seconds (the password wait is bounded to 4 s); one still "sending" after this was interrupted.
INTERRUPTED_SEND_AFTER = dt.timedelta(minutes=2)


async def release_interrupted_sends(
    db: Database, drafts: DraftStore, messages: MessageOutbox, clock: Clock,
    idle_for: dt.timedelta | None = INTERRUPTED_SEND_AFTER,
) -> int:
    """Drafts a crash left "sending" go back to review and their users are told, in one commit.

    At start with `idle_for` None (all of them, however the clock moved since) when this process
    holds the data folder (SQLite: nothing else can be sending), and from the periodic sweep for
    anything older than `INTERRUPTED_SEND_AFTER` (with several instances, another one may be sending
    right now).
    """
    now = clock.now()
    async with db.transaction():
        released = await drafts.release_interrupted_sends(now, idle_for)
        for draft in released:
            if draft.conversation_ref:
                note = cards.text(cards.language_for(draft.lang), "send_interrupted", reference=draft.reference)
                await messages.post(draft.conversation_ref, MessageContent(text=note), now=now,
                                    reference=draft.reference)
    if released:
        logger.warning("interrupted sends released back to review: %d", len(released))
    return len(released)


async def requeue_cut_off_sends(outbox: Outbox, messages: MessageOutbox) -> None:
    """At start, with the SQLite data folder held (no other process can be sending), the mails and Teams messages
    a stop or crash left "sending" are due again at once rather than after their lease (`OUTBOX_LEASE_SECONDS`):
    a Teams message waiting out its lease holds up every later one to its conversation. PostgreSQL's rows wait for
    their lease, as another instance may be sending them."""
    mails, posts = await outbox.requeue_cut_off(), await messages.requeue_cut_off()
    if mails or posts:
        logger.warning("sends cut off by a stop or crash, queued again at start: %d mail(s), %d Teams message(s)",
                       mails, posts)


async def sweep_drafts(drafts: DraftStore, messages: MessageOutbox, clock: Clock) -> None:
    """Wipe idle drafts and, in the same commit, queue the replacement of their cards in the chat.

    The chat may still show a review card with the family's data; it is replaced, so no client data
    outlives the draft's idle time (DRAFT_TTL_MINUTES) on screen either.
    """
    now = clock.now()

    async def replace(card: ShownCard) -> None:
        expired = cards.problem_card(cards.language_for(card.lang), "draft_expired", minutes=drafts.idle_minutes)
        await messages.update(card.conversation_ref, MessageContent(card=expired), now=now,
                              activity_id=card.activity_id)

    shown = await drafts.sweep(now, replace)
    if shown:
        logger.info("expired drafts wiped and their cards replaced: %d", len(shown))


async def _every(seconds: float, job: Callable[[], Awaitable[None]]) -> None:
    while True:
        try:
            await job()
        except Exception:
            logger.exception("periodic job failed")
        await asyncio.sleep(seconds)
