"""Turns a reviewed draft into an encrypted package and a queued mail, in one commit.

The one place where client data is packaged: it goes only into the AES-256 ZIP. The same
transaction queues the mail, records the referral (no client data) and wipes the draft, so
after "send" the bot holds the client's data only inside the encrypted ZIP until it is mailed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from bot.clock import Clock
from bot.core.metrics import Metrics
from bot.core.protocols import DataSharingProtocol
from bot.core.referral_values import ITEM_CATEGORIES, UNVERSIONED_CONSENT_TEXT, ReferralPackageContents, Referrer
from bot.core.sent_referrals import CLOSED, ReferralState, ReferralStore, SentReferral
from bot.delivery.mail_message import OutgoingMail, build_referral_mail
from bot.delivery.mail_outbox import Outbox
from bot.evidence.register import ProcessingRegister, RegisterEvent, recipient_of
from bot.referral.correction_package import CorrectionPackageContents, build_correction_package
from bot.referral.drafts import Draft, DraftState, DraftStore
from bot.referral.package import PackagePasswordError, build_package
from bot.secrets.zip_passwords import ZipPassword, ZipPasswordError, ZipPasswordProvider
from bot.storage.database import Database

logger = logging.getLogger(__name__)

PASSWORD_WAIT_SECONDS = 4.0  # the invoke must be answered within ~5 s; the fetch itself goes on after this


class AlreadySent(Exception):
    """The correction was sent before (a second click, or a colleague's); `reference` is its version."""

    def __init__(self, reference: str) -> None:
        super().__init__(reference)
        self.reference = reference


class FamilyClosed(Exception):
    """The referral a correction is for was closed (consent withdrawn, data deleted) before it could be queued.

    `referral` is the referral as it stands, read under its lock: a withdrawal or deletion that
    committed while the correction waited for its ZIP password is seen here.
    """

    def __init__(self, referral: SentReferral) -> None:
        super().__init__(referral.reference)
        self.referral = referral


class SendFailure(Exception):
    """Nothing was queued; `reason` is safe to log, `transient` says whether to try again soon."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


class PasswordUnavailable(SendFailure):
    """No ZIP password in time (vault slow, throttled or unreachable): the user can try again in a moment.

    A read that outlasted the wait goes on and fills the provider's cache; a failed one is tried
    again in the background.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason, transient=True)


@dataclass(frozen=True)
class Origin:
    """Where the referral was made, so the bot can report back there later."""

    conversation_id: str
    conversation_ref: str
    card_activity_id: str | None
    lang: str


@dataclass(frozen=True)
class QueuedReferral:
    """What the referrer is told right after pressing send."""

    reference: str
    queued_at: dt.datetime
    key_version: str


class ReferralSender:
    """Packages a draft in the SENDING state and queues its mail."""

    def __init__(
        self,
        *,
        db: Database,
        passwords: ZipPasswordProvider,
        outbox: Outbox,
        drafts: DraftStore,
        referrals: ReferralStore,
        register: ProcessingRegister,
        clock: Clock,
        timezone: ZoneInfo,
        mail_from: str,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = db
        self._metrics = metrics or Metrics.disabled()
        self._passwords = passwords
        self._outbox = outbox
        self._drafts = drafts
        self._referrals = referrals
        self._register = register
        self._clock = clock
        self._tz = timezone
        self._mail_from = mail_from
        #: Awaited before a package is made: the delivery worker's back-pressure (`DeliveryWorker.room`).
        self.before_queue: Callable[[], Awaitable[None]] = _nothing_to_wait_for

    async def queue(
        self, draft: Draft, protocol: DataSharingProtocol, referrer: Referrer, origin: Origin
    ) -> QueuedReferral:
        """Encrypt, queue, record and wipe the draft; raise SendFailure when nothing was queued.

        `protocol.sender.team` is the team the package, the mail and the record name (`sent_by`).
        """
        if draft.details is None or draft.consent is None:
            raise SendFailure("draft has no complete data", transient=False)
        await self.before_queue()
        password = await self._password(protocol)
        now = self._clock.now()
        contents = ReferralPackageContents(
            reference=draft.reference,
            protocol=protocol,
            client=draft.details,
            consent=draft.consent,
            referrer=referrer,
            key_version=password.version,
            created_at=now,
        )
        try:
            package = build_package(contents, password.value)
        except PackagePasswordError as error:
            raise SendFailure("zip password refused by the packager", transient=False) from error
        message = build_referral_mail(contents, package, sender=self._mail_from, local_tz=self._tz)
        record = dataclasses.replace(
            _queued_record(draft.reference, protocol, referrer, origin, password, message, draft.created_at, now),
            data_categories=draft.details.categories(),
            consent_version=draft.consent.text_version,
        )
        async with self._db.transaction():
            if not await self._drafts.close(draft, DraftState.SENT, now):
                raise SendFailure("draft changed while sending", transient=False)
            await self._commit(record, message, protocol, referrer, now)
        self._metrics.referral_sent(protocol.id, "referral")
        return QueuedReferral(reference=draft.reference, queued_at=now, key_version=password.version)

    async def queue_correction(
        self,
        original: SentReferral,
        item: str,
        values: Mapping[str, str],
        protocol: DataSharingProtocol,
        referrer: Referrer,
        origin: Origin,
        claim: Callable[[str], Awaitable[str | None]],
    ) -> QueuedReferral:
        """Encrypt and queue only the corrected item, as the next version of `original`.

        One transaction allocates the version (`VD-...-2`, `-3`, ...), lets `claim(version)` mark the
        correction request as sent with it (or say, by returning that version, that it already was:
        `AlreadySent`), and queues the package. It begins by locking the referral it corrects (the
        SQLite writer lock does that for every transaction), so concurrent clicks on one request, on
        one instance or several, send one correction and concurrent different requests get distinct
        versions, and a withdrawal or deletion committed since the caller looked stops it
        (`FamilyClosed`).
        """
        password = await self._password(protocol)
        now = self._clock.now()
        async with self._db.transaction():
            current = await self._referrals.lock(original.reference)
            if current.state in CLOSED:
                raise FamilyClosed(current)  # closed while the password came: nothing more may leave
            new_reference = await self._next_version(original.reference)
            sent_as = await claim(new_reference)
            if sent_as is not None:
                raise AlreadySent(sent_as)
            contents = CorrectionPackageContents(
                reference=new_reference,
                corrects=original.reference,
                protocol=protocol,
                item=item,
                values=values,
                referrer=referrer,
                key_version=password.version,
                created_at=now,
            )
            try:
                package = build_correction_package(contents, password.value)
            except PackagePasswordError as error:
                raise SendFailure("zip password refused by the packager", transient=False) from error
            message = build_referral_mail(
                contents, package, sender=self._mail_from, local_tz=self._tz, corrects=original.reference
            )
            record = dataclasses.replace(
                _queued_record(new_reference, protocol, referrer, origin, password, message, now, now),
                parent_reference=original.reference,
                corrected_item=item,
                data_categories=ITEM_CATEGORIES[item],
                # Sent again under the consent the family gave (queued before versions were recorded: those texts).
                consent_version=original.consent_version or UNVERSIONED_CONSENT_TEXT,
            )
            await self._commit(record, message, protocol, referrer, now)
        self._metrics.referral_sent(protocol.id, "correction")
        return QueuedReferral(reference=new_reference, queued_at=now, key_version=password.version)

    async def _next_version(self, root: str) -> str:
        """The next free version of `root`: `root-2` for the first correction."""
        count = await self._db.scalar("SELECT COUNT(*) AS n FROM referrals WHERE parent_reference = :root",
                                      {"root": root})
        return f"{root}-{int(count) + 2}"

    async def _password(self, protocol: DataSharingProtocol) -> ZipPassword:
        """The password within the user's time budget; giving up does not cancel the provider's fetch."""
        try:
            return await asyncio.wait_for(self._passwords.password_for(protocol), PASSWORD_WAIT_SECONDS)
        except TimeoutError as error:
            raise PasswordUnavailable("zip password not available in time") from error
        except ZipPasswordError as error:
            if error.transient:
                raise PasswordUnavailable(f"zip password unavailable: {error}") from error
            raise SendFailure(f"zip password unavailable: {error}", transient=False) from error

    async def _commit(
        self,
        record: SentReferral,
        message: OutgoingMail,
        protocol: DataSharingProtocol,
        referrer: Referrer,
        now: dt.datetime,
    ) -> None:
        """Queue the mail, record the referral and write the register, inside the caller's transaction."""
        await self._outbox.enqueue(
            message_id=record.message_id, reference=record.reference, payload=message.data, now=now
        )
        await self._referrals.add(record)
        for event, detail in (
            (RegisterEvent.PACKAGE_BUILT, f"AES-256 ZIP, key version {record.key_version}"),
            (RegisterEvent.QUEUED, f"to {protocol.recipient_mailbox}"),
        ):
            await self._register.append(
                at=now,
                event=event,
                actor_id=referrer.user_id,
                actor_name=referrer.display_name,
                protocol_id=protocol.id,
                reference=record.reference,
                detail=detail if record.corrected_item is None else f"{detail}; correction: {record.corrected_item}",
                data_categories=record.data_categories or (),
                recipient=record.recipient,
                consent_version=record.consent_version,
            )


def _queued_record(
    reference: str,
    protocol: DataSharingProtocol,
    referrer: Referrer,
    origin: Origin,
    password: ZipPassword,
    message: OutgoingMail,
    created_at: dt.datetime,
    now: dt.datetime,
) -> SentReferral:
    """The lasting record of a queued package: who, where to report back, which key, to whom; no client data.

    The caller adds what the package holds (`data_categories`, categories only) and the consent version.
    """
    return SentReferral(
        reference=reference,
        protocol_id=protocol.id,
        referrer_id=referrer.user_id,
        referrer_name=referrer.display_name,
        conversation_id=origin.conversation_id,
        conversation_ref=origin.conversation_ref,
        card_activity_id=origin.card_activity_id,
        lang=origin.lang,
        state=ReferralState.QUEUED,
        key_version=password.version,
        message_id=message.message_id,
        created_at=created_at,
        queued_at=now,
        recipient=recipient_of(protocol),
        sender_team=protocol.sender.team,  # the referrer's team: `DataSharingProtocol.sent_by`
    )


async def _nothing_to_wait_for() -> None:
    """No delivery worker to wait for (commands and tests that build a sender alone)."""
