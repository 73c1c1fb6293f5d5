"""Teams-shaped activities and card reading for the benchmark.

The test suite's own `TeamsUser`, card reading and form values (modules that import nothing of the
bot: the harness measures builds of other commits, whatever state this tree is in).
"""

from __future__ import annotations

from typing import Any

from tests.support.activities import TeamsUser
from tests.support.card_reading import actions
from tests.support.sample_values import CLIENT_FORM, CONSENT_ALL, PROTOCOL_ID

__all__ = ["CLIENT_FORM", "CONSENT_ALL", "PROTOCOL_ID", "BenchUser", "draft_id", "execute_actions", "invoke_card"]

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"


class BenchUser(TeamsUser):
    """A Kind en Gezin user in a personal chat with the bot."""

    @classmethod
    def numbered(cls, label: str, number: int) -> BenchUser:
        return cls(f"aad-{label}-{number}", f"User {label} {number}", f"a:personal-{label}-{number}")


def execute_actions(card: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every `Action.Execute` of the card by verb, with its data."""
    return actions(card)


def draft_id(card: dict[str, Any]) -> str | None:
    """The `data.draftId` the card's `Action.Execute` buttons carry, if any."""
    for data in execute_actions(card).values():
        if isinstance(data.get("draftId"), str):
            return str(data["draftId"])
    return None


def invoke_card(body: Any) -> dict[str, Any] | None:
    """The card of an invoke answer `{"statusCode": 200, "type": <card type>, "value": <card>}`."""
    if isinstance(body, dict) and body.get("type") == CARD_CONTENT_TYPE:
        card = body.get("value")
        if isinstance(card, dict):
            return card
    return None
