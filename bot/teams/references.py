"""Conversation references as the bot stores them: camelCase JSON of the SDK's `ConversationReference`.

A reference is what a proactive message needs to reach a chat: the service URL, the conversation
(with its tenant) and the bot's and user's accounts. botbuilder wrote the tenant as
`conversation.tenantID`, which the Agents SDK silently drops (PLATFORM.md); `upgrade_reference`
(`bot.storage.database`) rewrites
stored rows once, and `load_reference` applies it again to whatever it reads.
"""

from __future__ import annotations

import json
from typing import Any

from microsoft_agents.activity import Activity, ConversationReference

from bot.storage.database import upgrade_reference


def reference_of(activity: Activity) -> str:
    """The stored form of the reference to an incoming activity's conversation, tenant included.

    Teams puts the tenant in `conversation.tenantId` and in `channelData.tenant.id`; the latter is
    the one every Teams activity carries, so it fills a missing former.
    """
    reference = activity.get_conversation_reference()
    tenant = _channel_data_tenant(activity.channel_data)
    if reference.conversation is not None and not reference.conversation.tenant_id and tenant:
        reference.conversation.tenant_id = tenant
    # json.dumps, not pydantic's JSON: a display name with lone surrogates must not stop the turn.
    return json.dumps(reference.model_dump(by_alias=True, exclude_none=True, mode="json"))


def load_reference(stored: str) -> ConversationReference:
    """The SDK reference from its stored form (botbuilder-era forms included); ValueError when unreadable."""
    try:
        data = json.loads(upgrade_reference(stored))
        return ConversationReference.model_validate(data)
    except (ValueError, TypeError) as error:  # pydantic's ValidationError is a ValueError
        raise ValueError("stored conversation reference is unreadable") from error


def _channel_data_tenant(channel_data: Any) -> str:
    if not isinstance(channel_data, dict):
        return ""
    tenant = channel_data.get("tenant")
    value = tenant.get("id") if isinstance(tenant, dict) else None
    return value if isinstance(value, str) else ""
