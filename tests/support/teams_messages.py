"""What the bot sent to Teams, by kind: for tests that count every message a flow causes."""

from __future__ import annotations

import json
from typing import Any

from tests.support.card_reading import actions
from tests.support.connector import RecordedCall
from tests.support.ocmw_flow import CHANNEL

#: A text message's kind, by a phrase of its Dutch text (first match wins).
_TEXT_MARKERS = (("heeft geen juist", "none-to-ocmw"), ("Gekoppeld", "link-reply"),
                 ("ingetrokken", "withdrawal-notice"),
                 ("NIET verstuurd", "interrupted-text"), ("heeft de ontvangst", "ack-text"),
                 ("contact gehad", "outcome-text"), ("verwijderd", "deleted-text"),
                 ("verstuurd naar de mailbox", "delivered-text"),
                 ("werkdagen niet bevestigd", "ack-reminder-ocmw"),
                 ("werkdagen nog niet bevestigd", "ack-reminder-referrer"))


def card_verbs(call: RecordedCall) -> dict[str, dict[str, Any]]:
    """The verbs (with their data) of the card a call posted or edited; empty for a text."""
    attachments = call.body.get("attachments") or []
    return actions(attachments[0]["content"]) if attachments else {}


def kind(call: RecordedCall) -> str:
    """"ocmw-card", "ocmw-card-edit", "referrer-card", "delivered-text", ...; "other: <text>" when unknown."""
    in_channel = call.path.startswith(f"/v3/conversations/{CHANNEL}")
    text = str(call.body.get("text", ""))
    if call.body.get("attachments"):
        if in_channel:
            return "ocmw-card-edit" if call.method == "PUT" else "ocmw-card"
        return "correction-request" if "correction.submit" in card_verbs(call) else "referrer-card"
    for marker, found in _TEXT_MARKERS:
        if marker in text:
            return found
    return f"other: {text[:60]}"


def identity(call: RecordedCall) -> str:
    """Method, path and body: two calls with the same identity are one message sent twice."""
    return f"{call.method} {call.path} {json.dumps(call.body, sort_keys=True)}"
