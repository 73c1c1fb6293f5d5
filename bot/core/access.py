"""Who may refer or link: the tenant allow-lists.

Only Kind en Gezin staff refer: users of the configured tenant(s), optionally narrowed to listed
Entra object ids or Teams team/channel ids. That is the first gate; who may refer under which
protocol, and as which team, the protocol files say (`bot.referral.referrers`). The OCMW side is governed
by the linked conversation (`bot.ocmw.actions`); which conversations may be linked at all is
`OcmwChannelPolicy`. How often: `bot.storage.rate_limits`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ReferrerPolicy:
    """Empty `tenant_ids` means any tenant (development only; refused in production)."""

    tenant_ids: frozenset[str] = frozenset()
    object_ids: frozenset[str] = frozenset()
    team_or_channel_ids: frozenset[str] = frozenset()

    @property
    def any_tenant(self) -> bool:
        """True when no tenant list is configured."""
        return not self.tenant_ids

    def allows(self, *, tenant_id: str, object_id: str, team_or_channel_ids: Iterable[str]) -> bool:
        """True when this user, in this place, may make referrals."""
        if self.tenant_ids and tenant_id.lower() not in self.tenant_ids:
            return False
        if self.object_ids and object_id.lower() not in self.object_ids:
            return False
        return not self.team_or_channel_ids or bool(self.team_or_channel_ids & set(team_or_channel_ids))


@dataclass(frozen=True)
class OcmwChannelPolicy:
    """Which conversations `koppel` may link: Teams channels of these tenants only.

    A channel, because the referrals' cards are for the OCMW's team, not for one person's chat or
    a group chat anyone can be added to. Empty `tenant_ids` means any tenant (development only;
    refused in production).
    """

    tenant_ids: frozenset[str] = frozenset()

    @property
    def any_tenant(self) -> bool:
        """True when no tenant list is configured."""
        return not self.tenant_ids

    def allows_tenant(self, tenant_id: str) -> bool:
        """True when a channel of this tenant may become an OCMW's conversation."""
        return not self.tenant_ids or tenant_id.lower() in self.tenant_ids
