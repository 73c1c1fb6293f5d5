"""The DPO's copy of the register without shell access: `register` in Teams, a card, a link that works once.

Why this shape: the DPOs of both parties (protocol article 9) need the register as evidence, and
have no access to the server. The protocol file names them by Entra object id (`dpo_object_ids`);
Teams tells the bot who is typing, and the answer goes only to that person's personal chat with
the bot. A card cannot carry a file, so it carries links to the bot's own public address. Each
link's token is random (256 bits), stored only as its SHA-256, bound to that DPO and one protocol,
valid `LINK_LIFETIME` and usable once: a link forwarded, left in a browser history or a proxy log
is dead by then. The download route needs no Bot Framework token (a browser opens it) and serves
nothing without a valid token; every download is itself a register entry (`register_exported`).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import datetime as dt
import hashlib
import logging
import re
import secrets
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from aiohttp import web

import cards
from bot.clock import Clock
from bot.core.protocols import DataSharingProtocol, ProtocolRegistry
from bot.evidence.register import ProcessingRegister, ProtocolSummary, RegisterEvent
from bot.evidence.register_formats import CsvExport, ExportWriter, JsonExport
from bot.referral.dialogue import Actor, Reply, is_personal_chat
from bot.storage.database import Database, to_text

logger = logging.getLogger(__name__)

#: How long a download link works (and it works once).
LINK_LIFETIME = dt.timedelta(minutes=15)
EXPORT_PATH = "/register/export/"
FORMATS = ("csv", "json")
#: What `secrets.token_urlsafe(32)` makes; anything else is refused before the database is asked.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")
#: Neither the file nor the refusal may be kept by a browser or proxy cache, or leak the URL onwards.
_PRIVATE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'",
}


def _new_token() -> str:
    return secrets.token_urlsafe(32)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class Download:
    """A file for the browser: its name, type and bytes, made a page of entries at a time as they are sent."""

    filename: str
    content_type: str
    body: AsyncGenerator[bytes, None]


class RegisterExports:
    """The `register` command for the DPOs named in the protocol files, and the downloads it hands out."""

    def __init__(
        self,
        *,
        db: Database,
        register: ProcessingRegister,
        registry: ProtocolRegistry,
        clock: Clock,
        timezone: ZoneInfo,
        public_base_url: str,
        new_token: Callable[[], str] = _new_token,
    ) -> None:
        self._db = db
        self._register = register
        self._registry = registry
        self._clock = clock
        self._tz = timezone
        self._base_url = public_base_url
        self._new_token = new_token

    async def on_command(self, actor: Actor, search: str = "") -> Reply:
        """The summary card with fresh links for a DPO in the personal chat; a polite refusal for anyone else.

        `search` (`register <part of a name>`) keeps the protocols whose id, OCMW or municipality holds
        it: one card shows at most `cards.REGISTER_MAX_PROTOCOLS`, and says how many more there are.
        """
        if not is_personal_chat(actor):
            logger.info("register asked outside a personal chat: pointed to the personal chat",
                        extra={"conversation_type": actor.conversation_type[:32]})
            return Reply(text=cards.text(actor.lang, "register.personal_chat_only"))
        protocols = self._protocols_of(actor.user_id)
        if not protocols:
            logger.warning("register asked by someone no protocol file names as DPO: refused",
                           extra={"user_id": actor.user_id[:64], "tenant_id": actor.tenant_id[:64]})
            return Reply(text=cards.text(actor.lang, "register.not_dpo"))
        wanted = search.strip().casefold()
        if wanted:
            protocols = [protocol for protocol in protocols if wanted in " ".join(
                (protocol.id, protocol.recipient.organisation, protocol.recipient_municipality)).casefold()]
            if not protocols:
                return Reply(text=cards.text(actor.lang, "register.no_match", search=cards.escape_markdown(
                    search.strip()[:60]), max=str(cards.REGISTER_MAX_PROTOCOLS)))
        not_shown = max(0, len(protocols) - cards.REGISTER_MAX_PROTOCOLS)
        protocols = protocols[:cards.REGISTER_MAX_PROTOCOLS]  # links are made only for what the card shows
        now = self._clock.now()
        problems = await self._register.verify()
        views = []
        async with self._db.transaction():
            await self._purge(now)
            for protocol in protocols:
                summary = await self._register.summary(protocol.id)
                csv_url, json_url = ("", "") if not self._base_url else (
                    await self._link(actor, protocol, now), await self._link(actor, protocol, now) + "?format=json")
                views.append(cards.RegisterProtocolView(
                    ocmw=protocol.recipient.organisation,
                    protocol_id=protocol.id,
                    entries=summary.entries,
                    first_day=None if summary.first_at is None else summary.first_at.astimezone(self._tz).date(),
                    last_day=None if summary.last_at is None else summary.last_at.astimezone(self._tz).date(),
                    last_seq=summary.last_seq,
                    last_hash=summary.last_hash,
                    csv_url=csv_url,
                    json_url=json_url,
                ))
        logger.info("register summary sent to a DPO%s", "" if self._base_url else " (no links: PUBLIC_BASE_URL unset)",
                    extra={"protocol_id": ",".join(protocol.id for protocol in protocols)})
        card = cards.register_export_card(
            actor.lang,
            protocols=views,
            chain_entries=await self._register.count(),
            chain_problems=len(problems),
            first_problem_seq=problems[0].seq if problems else None,
            links_until=None if not self._base_url else (now + LINK_LIFETIME).astimezone(self._tz),
            link_minutes=int(LINK_LIFETIME.total_seconds() // 60),
            not_shown=not_shown,
        )
        return Reply(card=card)

    async def download(self, token: str, file_format: str) -> Download | None:
        """The protocol's register for a valid token, which is used up; None for any other token (one answer).

        Nothing of the register is read before the token is known to be valid and its DPO still named
        in the protocol file: a stranger's request costs one indexed lookup. Taking the token, counting
        what the file will hold (`ProcessingRegister.summary`) and recording the export are then one
        transaction: of two requests with the same token, the second finds nothing and gets nothing,
        without reading the register either. The entries themselves are read after it, outside any
        transaction (no writer waits for a long read), up to the last one counted, and only as the file
        is sent (`Download.body`): a page of `PAGE_SIZE` entries at a time, each formatted in a worker
        thread, so a register years old neither holds the event loop nor sits whole in memory (built
        whole, 40 000 entries took 124 MB for the CSV file and 225 MB for the JSON one).
        """
        if file_format not in FORMATS or not _TOKEN.match(token):
            return None
        token_hash = _token_hash(token)
        await self._purge(self._clock.now())
        link = await self._valid_link(token_hash, self._clock.now())
        if link is None:
            return None
        protocol_id, dpo_id, dpo_name = link
        now = self._clock.now()
        async with self._db.transaction():
            taken = await self._db.execute("DELETE FROM register_links WHERE token_hash = :hash AND expires_at > :now",
                                           {"hash": token_hash, "now": to_text(now)})
            if taken.rowcount != 1:
                logger.warning("register download refused: unknown, used or expired link")
                return None
            summary = await self._register.summary(protocol_id)
            await self._register.append(at=now, event=RegisterEvent.REGISTER_EXPORTED, actor_id=dpo_id,
                                        actor_name=dpo_name, protocol_id=protocol_id,
                                        detail=self._export_detail(summary, file_format))
        logger.info("register downloaded by a DPO", extra={"protocol_id": protocol_id})
        stem = f"verwerkingsregister-{protocol_id}-{now.astimezone(self._tz).strftime('%Y%m%d')}"
        body = self._file(protocol_id, summary.last_seq or 0, file_format)
        if file_format == "json":
            return Download(f"{stem}.json", "application/json; charset=utf-8", body)
        return Download(f"{stem}.csv", "text/csv; charset=utf-8", body)

    async def purge_expired(self) -> int:
        """Forget the links that can no longer be used; returns how many (the periodic sweep calls this)."""
        return await self._purge(self._clock.now())

    # -- helpers --------------------------------------------------------------------------------

    async def _valid_link(self, token_hash: str, now: dt.datetime) -> tuple[str, str, str] | None:
        """The protocol, DPO id and DPO name of a link that still works, or None (logged, one answer for all)."""
        row = await self._db.fetch_one("SELECT * FROM register_links WHERE token_hash = :hash AND expires_at > :now",
                                       {"hash": token_hash, "now": to_text(now)})
        if row is None:
            logger.warning("register download refused: unknown, used or expired link")
            return None
        protocol_id, dpo_id = str(row["protocol_id"]), str(row["dpo_id"])
        protocol = self._registry.get(protocol_id)
        if protocol is None or dpo_id not in protocol.dpo_object_ids:
            await self._db.execute("DELETE FROM register_links WHERE token_hash = :hash", {"hash": token_hash})
            logger.warning("register download refused: the protocol file no longer names this DPO",
                           extra={"protocol_id": protocol_id, "user_id": dpo_id})
            return None
        return protocol_id, dpo_id, str(row["dpo_name"])

    def _protocols_of(self, user_id: str) -> list[DataSharingProtocol]:
        wanted = user_id.lower()
        return [protocol for protocol in self._registry.all() if wanted and wanted in protocol.dpo_object_ids]

    async def _link(self, actor: Actor, protocol: DataSharingProtocol, now: dt.datetime) -> str:
        """A new single-use link for this DPO and protocol; only the token's hash is stored."""
        token = self._new_token()
        await self._db.execute(
            "INSERT INTO register_links (token_hash, dpo_id, dpo_name, protocol_id, created_at, expires_at)"
            " VALUES (:hash, :dpo_id, :dpo_name, :protocol, :now, :expires)",
            {"hash": _token_hash(token), "dpo_id": actor.user_id.lower(), "dpo_name": actor.display_name,
             "protocol": protocol.id, "now": to_text(now), "expires": to_text(now + LINK_LIFETIME)},
        )
        return f"{self._base_url}{EXPORT_PATH}{token}"

    async def _purge(self, now: dt.datetime) -> int:
        return (await self._db.execute("DELETE FROM register_links WHERE expires_at <= :now",
                                       {"now": to_text(now)})).rowcount

    async def _file(self, protocol_id: str, through_seq: int, file_format: str) -> AsyncGenerator[bytes, None]:
        """The file's bytes, a page of entries at a time, each page formatted in a worker thread."""
        writer: ExportWriter = JsonExport() if file_format == "json" else CsvExport()
        # The BOM makes Excel read the CSV file as UTF-8.
        yield (b"" if file_format == "json" else codecs.BOM_UTF8) + writer.begin().encode("utf-8")
        async for rows in self._register.export_protocol_pages(protocol_id, through_seq=through_seq):
            yield await asyncio.to_thread(_encoded, writer, rows)
        yield writer.end().encode("utf-8")

    def _export_detail(self, summary: ProtocolSummary, file_format: str) -> str:
        """What was handed out, in facts: format, count, the local days it spans, the last entry."""
        if summary.first_at is None or summary.last_at is None:
            return f"{file_format}; 0 entries"
        first, last = (moment.astimezone(self._tz).date() for moment in (summary.first_at, summary.last_at))
        return (f"{file_format}; {summary.entries} entries; period {first.isoformat()} to {last.isoformat()}; "
                f"last entry {summary.last_seq} (hash {summary.last_hash})")


def _encoded(writer: ExportWriter, rows: list[dict[str, str]]) -> bytes:
    """A page of the file (run in a worker thread: 2000 entries are tens of milliseconds of CPU)."""
    return writer.page(rows).encode("utf-8")


#: The one answer to every link that does not work, in both languages (a browser sends no Teams locale).
_REFUSAL = "".join(
    cards.text(lang, "register.link_invalid", minutes=str(int(LINK_LIFETIME.total_seconds() // 60))) + "\n\n"
    for lang in cards.LANGUAGES
)


def download_route(exports: RegisterExports) -> web.RouteDef:
    """`GET /register/export/<token>[?format=json]`: no Bot Framework token, only a valid link token.

    HEAD is not routed: it would use the link up without delivering the file (link checkers send it).
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        download = await exports.download(request.match_info["token"], request.query.get("format", "csv"))
        if download is None:
            return web.Response(status=404, text=_REFUSAL, headers=_PRIVATE_HEADERS)
        # Sent as it is read (chunked, no length known in advance): a failure halfway leaves the browser
        # with a broken download, never with a file that looks whole.
        response = web.StreamResponse(headers={
            **_PRIVATE_HEADERS,
            "Content-Type": download.content_type,
            "Content-Disposition": f'attachment; filename="{download.filename}"',
        })
        await response.prepare(request)
        async with contextlib.aclosing(download.body) as pieces:
            async for piece in pieces:
                await response.write(piece)
        await response.write_eof()
        return response

    return web.get(EXPORT_PATH + "{token}", handler, allow_head=False)
