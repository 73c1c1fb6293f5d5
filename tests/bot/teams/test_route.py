"""`POST /api/messages` never answers 500: malformed requests get 4xx, bad actions a card."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver
from tests.support.card_reading import actions


@pytest.mark.parametrize(
    "value",
    [
        None,
        "just a string",
        [],
        {},
        {"action": None},
        {"action": "Action.Execute"},
        {"action": {"type": "Action.Submit", "verb": "referral.start", "data": {}}},
        {"action": {"type": "Action.Execute", "verb": 42, "data": {}}},
        {"action": {"type": "Action.Execute", "verb": "referral.send", "data": []}},
        {"action": {"type": "Action.Execute", "verb": "referral.send", "data": {"draftId": 12}}},
        {"action": {"type": "Action.Execute", "verb": "referral.send", "data": {"draftId": "x" * 5000}}},
        {"action": {"type": "Action.Execute", "verb": "referral.details", "data": {"draftId": {"a": 1}}}},
    ],
)
async def test_malformed_card_actions_get_a_card_not_a_500(
    bot: BotDriver, referrer: TeamsUser, value: Any
) -> None:
    activity = referrer.card_action(bot.service_url, "referral.start", {})
    activity["value"] = value
    response = await bot.post(activity)
    assert response.status == 200
    body = await response.json()
    assert body["type"] == "application/vnd.microsoft.card.adaptive"
    assert "referral.start" in actions(body["value"])


async def test_an_action_with_data_of_the_wrong_types_keeps_the_dialogue_alive(
    bot: BotDriver, referrer: TeamsUser
) -> None:
    card = await bot.act(referrer, "referral.start", {})
    draft_id = next(iter(actions(card).values()))["draftId"]
    odd = await bot.act(
        referrer, "referral.consent", {"draftId": draft_id, "ocmw": ["x"], "consentGiven": {"nested": True}}
    )
    assert "referral.consent" in actions(odd)


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"not json", "application/json", 400),
        (b"[1, 2, 3]", "application/json", 400),
        (b'{"type": "message"}', "application/json", 400),
        (b'{"text": "no type"}', "application/json", 400),
        (b"{}", "text/plain", 415),
        (json.dumps({"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}).encode(),
         "application/json", 400),
        (b"{" + b'"x": "' + b"a" * (300 * 1024) + b'"}', "application/json", 413),
    ],
)
async def test_malformed_requests_get_a_4xx(bot: BotDriver, body: bytes, content_type: str, status: int) -> None:
    response = await bot.session.post(
        f"{bot.bot_url}/api/messages", data=body, headers={"Content-Type": content_type}
    )
    assert response.status == status


async def test_garbage_authorization_header_is_401_not_500(bot: BotDriver, referrer: TeamsUser) -> None:
    response = await bot.post(referrer.message(bot.service_url, "hulp"), headers={"Authorization": "Bearer garbage"})
    assert response.status == 401


async def test_other_invokes_are_501_not_500(bot: BotDriver, referrer: TeamsUser) -> None:
    activity = referrer.card_action(bot.service_url, "x", {})
    activity["name"] = "composeExtension/query"
    response = await bot.post(activity)
    assert response.status == 501


async def test_healthz(bot: BotDriver) -> None:
    response = await bot.session.get(f"{bot.bot_url}/healthz")
    assert response.status == 200


async def test_readyz_reports_storage_protocols_and_secret_provider(bot: BotDriver) -> None:
    response = await bot.session.get(f"{bot.bot_url}/readyz")
    body = await response.json()
    assert response.status == 200 and body["checks"] == {
        "storage": "ok", "protocols": "ok: 1 in force", "secret_provider": "ok", "protocol_files": "ok"
    }


async def test_readyz_is_503_when_no_protocol_is_in_force(bot: BotDriver) -> None:
    import datetime as dt

    bot.services.worker._clock.current = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)  # type: ignore[attr-defined]
    response = await bot.session.get(f"{bot.bot_url}/readyz")
    assert response.status == 503 and (await response.json())["checks"]["protocols"].startswith("failed")


async def test_a_throttled_reply_is_retried(bot: BotDriver, referrer: TeamsUser) -> None:
    bot.connector.fail_next(429, count=2, retry_after="0")
    response = await bot.post(referrer.message(bot.service_url, "hulp"))
    assert response.status == 202
    posts = [call for call in bot.connector.calls if call.method == "POST"]
    assert len(posts) == 3, "two throttled attempts, then the reply"
    assert "referral.start" in actions(posts[-1].body["attachments"][0]["content"])


async def test_replies_reuse_one_connection_to_the_connector(bot: BotDriver, referrer: TeamsUser) -> None:
    for _ in range(3):
        await bot.say(referrer, "hulp")
    ports = {call.peer_port for call in bot.connector.calls}
    assert len(bot.connector.calls) == 3 and len(ports) == 1, ports


async def test_a_failing_turn_never_shows_the_exception_to_the_user(
    bot: BotDriver, referrer: TeamsUser, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK's default turn-error handler posts "Exception caught : ..." into the chat."""
    from bot.router import Router

    def broken(*_: object) -> None:
        raise RuntimeError("internal detail with a family name Zoëlle")

    monkeypatch.setattr(Router, "on_text", broken)
    response = await bot.post(referrer.message(bot.service_url, "hulp"))
    assert response.status == 202
    assert bot.connector.calls == [], "nothing is posted to the user"
    assert "turn failed" in caplog.text


async def test_the_card_of_an_invoke_answer_is_not_copied_on_its_way_through_the_sdk(
        bot: BotDriver, referrer: TeamsUser, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK deep-copies every activity it sends, the invoke answer too, and pydantic walked the card
    twice more: a card of ~200 nodes, ~11 % of a click's CPU (issue 14). The answer passes through as it
    is, and reaches Teams whole."""
    copied_cards = 0
    copy_dict = copy._deepcopy_dispatch[dict]  # type: ignore[attr-defined]  # how deepcopy copies a dict

    def copy_dict_watched(value: dict[Any, Any], memo: Any, *rest: Any) -> Any:
        nonlocal copied_cards
        copied_cards += value.get("type") == "AdaptiveCard"
        return copy_dict(value, memo, *rest)

    monkeypatch.setitem(copy._deepcopy_dispatch, dict, copy_dict_watched)  # type: ignore[attr-defined]
    card = await bot.act(referrer, "referral.start", {})
    assert card["type"] == "AdaptiveCard" and "referral.consent" in actions(card)
    assert copied_cards == 0
