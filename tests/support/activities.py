"""Teams-shaped activities for driving the bot over HTTP."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

TENANT_ID = "72f988bf-0000-4000-8000-000000000001"
BOT_ID = "28:bot-app-id"
#: Activity ids, unique in the test run as Teams' are in a conversation: the bot runs a copy of an id it has
#: seen only once (`bot.storage.activity_receipts`), and a user made again must not repeat its ids.
_ACTIVITY_IDS = itertools.count(1)


@dataclass
class TeamsUser:
    """A user in a conversation, as Teams describes them."""

    aad_object_id: str
    name: str
    conversation_id: str
    locale: str = "nl-BE"
    channel: bool = False
    tenant_id: str = TENANT_ID
    #: Teams' `conversation.conversationType`; None: "channel" or "personal", after `channel`.
    conversation_type: str | None = None
    #: The Teams team of a channel (`channelData.team.id`); None: the channel's own id (its General channel).
    team_id: str | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: _ACTIVITY_IDS)

    def _base(self, service_url: str, activity_type: str) -> dict[str, Any]:
        activity: dict[str, Any] = {
            "type": activity_type,
            "id": f"incoming-{next(self._ids)}",
            "timestamp": "2026-11-28T10:00:00.000Z",
            "serviceUrl": service_url,
            "channelId": "msteams",
            "from": {"id": f"29:{self.aad_object_id}", "name": self.name, "aadObjectId": self.aad_object_id},
            "conversation": {
                "id": self.conversation_id,
                "conversationType": self.conversation_type or ("channel" if self.channel else "personal"),
                "tenantId": self.tenant_id,
            },
            "recipient": {"id": BOT_ID, "name": "Veilig doorverwijzen"},
            "locale": self.locale,
            "channelData": {"tenant": {"id": self.tenant_id}},
        }
        if self.channel:
            channel_id = self.conversation_id.split(";", 1)[0]
            activity["channelData"].update({"team": {"id": self.team_id or channel_id}, "channel": {"id": channel_id}})
        return activity

    def message(self, service_url: str, text: str) -> dict[str, Any]:
        activity = self._base(service_url, "message")
        activity["text"] = text
        return activity

    def in_thread(self, message_id: str) -> TeamsUser:
        """The same user acting on a message in a channel thread (the card the bot posted there)."""
        channel = self.conversation_id.split(";", 1)[0]
        return TeamsUser(self.aad_object_id, self.name, f"{channel};messageid={message_id}", self.locale, self.channel,
                         self.tenant_id, self.conversation_type, self.team_id)

    def card_action(
        self, service_url: str, verb: str, data: dict[str, Any], reply_to: str = "card-1"
    ) -> dict[str, Any]:
        activity = self._base(service_url, "invoke")
        activity["name"] = "adaptiveCard/action"
        activity["replyToId"] = reply_to
        activity["value"] = {"action": {"type": "Action.Execute", "verb": verb, "data": data}, "trigger": "manual"}
        return activity

    def bot_installed(self, service_url: str) -> dict[str, Any]:
        activity = self._base(service_url, "conversationUpdate")
        activity["membersAdded"] = [{"id": BOT_ID}]
        activity["channelData"]["eventType"] = "teamMemberAdded"
        return activity

    def bot_removed(self, service_url: str) -> dict[str, Any]:
        """The app removed from the team (or uninstalled from the personal chat): the bot among `membersRemoved`."""
        activity = self._base(service_url, "conversationUpdate")
        activity["membersRemoved"] = [{"id": BOT_ID}]
        activity["channelData"]["eventType"] = "teamMemberRemoved"
        return activity

    def team_event(self, service_url: str, event_type: str) -> dict[str, Any]:
        """What Teams says of the whole team, in its General channel: teamArchived, teamUnarchived, teamDeleted..."""
        activity = self._base(service_url, "conversationUpdate")
        activity["channelData"]["eventType"] = event_type
        return activity
