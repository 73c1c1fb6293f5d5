"""The family's information sheet: one printable page per protocol, at a stable public address.

The consent card links it (with `PUBLIC_BASE_URL`) so the worker can give the family on paper what
was read to them, with the addresses. The page is built from the protocol file and the same
catalogue texts as the card; it holds no client data, so it needs no Bot Framework token.
"""

from __future__ import annotations

import urllib.parse

import cards
from bot.protocols import DataSharingProtocol

#: The sheet of protocol <id> is at `/informatieblad/<id>` (and `/informatieblad/<id>.html`).
SHEET_PATH_PREFIX = "/informatieblad/"


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

