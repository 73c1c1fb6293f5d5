"""Who may refer under which protocol, and as which team: the protocol files' `[[sender.teams]]`.

A protocol names its sending teams; each lists Entra user object ids, security group ids and Teams
team ids. An object id is in the Teams activity, so those need nothing else; a group or team
needs the directory (`MembershipChecker`, Microsoft Graph). The answers are kept per user and
group for `cache_ttl`, so one referral (start, consent, send) usually asks once; every lookup is
bounded in time, because Teams wants the invoke answered within about 5 s. When the directory
cannot answer, nobody is let through on a guess: `MembershipUnavailable`, and the user tries again.

A user in several teams of one protocol refers as the first entry listing their object id, else
as the first entry (in file order) with one of their groups or teams. A protocol without
`[[sender.teams]]` lets anyone the global `ReferrerPolicy` allows refer as its `[sender] team`
(development only: `BOT_ENV=production` refuses such a file).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.clock import Clock
from bot.core.protocols import DataSharingProtocol

logger = logging.getLogger(__name__)

#: checkMemberGroups takes at most 20 ids per request.
MAX_GROUPS_PER_REQUEST = 20
#: How long a start, consent or send may wait for the directory: the invoke is answered within ~5 s.
MEMBERSHIP_WAIT_SECONDS = 2.5
#: Users whose answers are kept; beyond this the oldest go first (a brake, not a limit anyone meets).
_MAX_CACHED_USERS = 10_000
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class MembershipUnavailable(Exception):
    """The directory could not say in time which groups a user is in; `reason` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MembershipChecker(Protocol):
    """Which groups a user is in, from the directory (Microsoft Graph in production)."""

    async def member_of(self, user_id: str, group_ids: Sequence[str]) -> frozenset[str]:
        """The ids among `group_ids` (at most 20) the user is a member of, directly or through a nested group.

        Raises MembershipUnavailable when the directory cannot answer.
        """
        ...


@dataclass(frozen=True)
class Allowed:
    """A protocol this user may refer under, and the team the package and the mail name."""

    protocol: DataSharingProtocol
    team: str


@dataclass
class _Answer:
    member: bool
    until: dt.datetime


class ReferrerAccess:
    """Answers "may this user refer under this protocol, and as which team?" from the protocol files."""

    def __init__(
        self,
        membership: MembershipChecker,
        *,
        clock: Clock,
        cache_ttl: dt.timedelta = dt.timedelta(minutes=10),
        wait_seconds: float = MEMBERSHIP_WAIT_SECONDS,
    ) -> None:
        self._membership = membership
        self._clock = clock
        self._ttl = cache_ttl
        self._wait = wait_seconds
        self._answers: dict[str, dict[str, _Answer]] = {}

    async def allowed(self, user_id: str, protocols: Sequence[DataSharingProtocol]) -> list[Allowed]:
        """The protocols among `protocols` this user may refer under, each with its team, in the given order.

        Raises MembershipUnavailable when a group or team had to be looked up and could not be:
        offering only some of the OCMWs would look like the others do not exist.
        """
        user = user_id.strip().lower()
        needed = frozenset().union(*(_groups_to_ask(p, user) for p in protocols))
        member_of = await self._member_of(user, needed) if needed else frozenset()
        found = []
        for protocol in protocols:
            team = _first_match(protocol, user, member_of)
            if team is not None:
                found.append(Allowed(protocol, team))
        return found

    async def confirm(self, user_id: str, protocol: DataSharingProtocol, team: str | None) -> str | None:
        """The team this user refers as under `protocol` now, or None when they may not (any more).

        With `team` (the one named when the referral began) the user must still belong to that very
        entry: the package names the team the referral was started for, or nothing is sent.
        Raises MembershipUnavailable as `allowed` does.
        """
        user = user_id.strip().lower()
        if team is None or not protocol.sender_teams:
            found = await self.allowed(user, [protocol])
            return found[0].team if found else None
        entry = next((entry for entry in protocol.sender_teams if entry.name == team), None)
        if entry is None:  # the entry was renamed or removed from the file since
            return None
        if user in entry.object_ids:
            return team
        if not entry.directory_groups or not _GUID.match(user):
            return None
        return team if await self._member_of(user, entry.directory_groups) else None

    async def _member_of(self, user: str, group_ids: frozenset[str]) -> frozenset[str]:
        """The groups among `group_ids` the user is in: from the kept answers, the rest in one bounded lookup."""
        now = self._clock.now()
        kept = self._answers.get(user, {})
        missing = sorted(group for group in group_ids if group not in kept or kept[group].until <= now)
        if missing:
            answered = await self._ask(user, missing)
            kept = self._keep(user, {group: group in answered for group in missing}, now)
        return frozenset(group for group in group_ids if kept[group].member)

    async def _ask(self, user: str, group_ids: list[str]) -> frozenset[str]:
        membership = self._membership
        chunks = [group_ids[start:start + MAX_GROUPS_PER_REQUEST]
                  for start in range(0, len(group_ids), MAX_GROUPS_PER_REQUEST)]
        try:
            async with asyncio.timeout(self._wait):
                answers = await asyncio.gather(*(membership.member_of(user, chunk) for chunk in chunks),
                                               return_exceptions=True)  # no lookup is left running unawaited
        except TimeoutError as error:
            raise MembershipUnavailable(f"the directory did not answer within {self._wait:g} s") from error
        member_of: set[str] = set()
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
            member_of |= answer
        return frozenset(member_of)

    def _keep(self, user: str, answers: dict[str, bool], now: dt.datetime) -> dict[str, _Answer]:
        """Keep fresh answers for `cache_ttl`; drop the oldest users beyond `_MAX_CACHED_USERS`."""
        kept = self._answers.pop(user, {})  # re-inserted last: the dict's order is the users' age
        kept = {group: answer for group, answer in kept.items() if answer.until > now}
        kept.update({group: _Answer(member, now + self._ttl) for group, member in answers.items()})
        self._answers[user] = kept
        while len(self._answers) > _MAX_CACHED_USERS:
            del self._answers[next(iter(self._answers))]
        return kept


def _groups_to_ask(protocol: DataSharingProtocol, user: str) -> frozenset[str]:
    """The group and team ids to look up for `user`: none when an entry lists their object id already."""
    if any(user in entry.object_ids for entry in protocol.sender_teams) or not _GUID.match(user):
        return frozenset()  # matched without the directory; or no Entra object id, so in no group
    return frozenset().union(*(entry.directory_groups for entry in protocol.sender_teams))


def _first_match(protocol: DataSharingProtocol, user: str, member_of: frozenset[str]) -> str | None:
    """The team `user` refers as under `protocol`: object ids first, then groups and teams, each in file order."""
    if not protocol.sender_teams:
        return protocol.sender.team
    by_object = next((entry for entry in protocol.sender_teams if user in entry.object_ids), None)
    if by_object is not None:
        return by_object.name
    by_group = next((entry for entry in protocol.sender_teams if entry.directory_groups & member_of), None)
    return None if by_group is None else by_group.name
