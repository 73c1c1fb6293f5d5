"""The family's information sheet: one printable page per protocol, at a stable public address.

The consent card links it (with `PUBLIC_BASE_URL`) so the worker can give the family on paper what
was read to them, with the addresses. The page is built from the protocol file and the same
catalogue texts as the card; it holds no client data, so it needs no Bot Framework token.
"""

from __future__ import annotations

import urllib.parse

from aiohttp import web

import cards
from bot.core.protocols import DataSharingProtocol, ProtocolRegistry

#: The sheet of protocol <id> is at `/informatieblad/<id>` (and `/informatieblad/<id>.html`).
SHEET_PATH_PREFIX = "/informatieblad/"
_HTML_SUFFIX = ".html"
_HEADERS = {
    "Content-Security-Policy": cards.SHEET_CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # A protocol file can change (an end date, a DPO's address): always ask again, the page is small.
    "Cache-Control": "no-cache",
}


def sheet_path(protocol_id: str) -> str:
    """The path of the protocol's sheet on the bot: stable for as long as the protocol's id is."""
    return SHEET_PATH_PREFIX + urllib.parse.quote(protocol_id, safe="")


def protocol_facts(protocol: DataSharingProtocol, public_base_url: str) -> cards.ProtocolFacts:
    """What the family is told about `protocol`; the sheet's address only when the bot knows its own."""
    return cards.ProtocolFacts(
        id=protocol.id,
        title=protocol.title,
        sender=protocol.sender.organisation,
        sender_team=protocol.sender.team,
        sender_dpo=protocol.sender_dpo,
        recipient=protocol.recipient.organisation,
        recipient_dpo=protocol.recipient_dpo,
        in_force_from=protocol.in_force_from,
        published_at=protocol.published_at,
        sheet_url=public_base_url + sheet_path(protocol.id) if public_base_url else "",
    )


def sheet_routes(registry: ProtocolRegistry, public_base_url: str) -> list[web.RouteDef]:
    """`GET /informatieblad/<protocol id>[.html]`: a public page, no token, no client data.

    Every protocol file in the folder has its sheet, also one not yet or no longer in force: a family
    may look its sheet up long after the referral. An unknown id gets a Dutch 404 page.
    """

    async def information_sheet(request: web.Request) -> web.Response:
        protocol = registry.get(request.match_info["name"].removesuffix(_HTML_SUFFIX))
        if protocol is None:
            return _html(cards.information_sheet_not_found_html(), status=404)
        facts = protocol_facts(protocol, public_base_url)
        return _html(cards.information_sheet_html(facts, online_url=facts.sheet_url))

    return [web.get(SHEET_PATH_PREFIX + "{name}", information_sheet)]


def _html(page: str, *, status: int = 200) -> web.Response:
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8", headers=_HEADERS)
