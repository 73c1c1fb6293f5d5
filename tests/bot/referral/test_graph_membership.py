"""checkMemberGroups against the local HTTPS Graph stand-in: the request's shape, the answers, every failure refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.identity import CredentialUnavailableError

from bot.referral.graph_membership import GraphMembershipChecker
from bot.referral.referrers import MembershipUnavailable
from tests.support.graph_standin import GraphStandIn, StaticTokenCredential, graph_standin

USER = "5c0ffee0-0000-4000-8000-00000000a002"
GROUPS = ["6a7b8c9d-0000-4000-8000-0000000000b1", "6a7b8c9d-0000-4000-8000-0000000000b2"]


@pytest.fixture
async def graph() -> AsyncIterator[GraphStandIn]:
    async with graph_standin() as standin:
        yield standin


@pytest.fixture
async def checker(graph: GraphStandIn) -> AsyncIterator[GraphMembershipChecker]:
    async with StaticTokenCredential(graph.token) as credential:
        membership = GraphMembershipChecker(credential, base_url=graph.base_url, ca_file=graph.ca_path)
        try:
            yield membership
        finally:
            await membership.close()


async def test_the_answer_is_the_subset_the_user_is_in(checker: GraphMembershipChecker, graph: GraphStandIn) -> None:
    graph.memberships[USER] = {GROUPS[1].upper()}

    assert await checker.member_of(USER, GROUPS) == {GROUPS[1]}

    [request] = graph.membership_checks
    assert request.method == "POST" and request.body == {"groupIds": GROUPS} and not graph.problems


async def test_a_user_the_directory_does_not_know_is_in_no_group(
    checker: GraphMembershipChecker, graph: GraphStandIn
) -> None:
    graph.unknown_users.add(USER)
    assert await checker.member_of(USER, GROUPS) == frozenset()


@pytest.mark.parametrize(("status", "says"), [(403, "GroupMember.Read.All"), (429, "throttled"),
                                              (503, "temporarily unavailable"), (400, "unexpected")])
async def test_a_refusal_is_unavailable_with_a_reason_that_says_what_to_do(
    checker: GraphMembershipChecker, graph: GraphStandIn, status: int, says: str
) -> None:
    graph.answer_next(status)
    with pytest.raises(MembershipUnavailable) as refused:
        await checker.member_of(USER, GROUPS)
    assert str(status) in refused.value.reason and says in refused.value.reason


async def test_a_wrong_token_is_unavailable(graph: GraphStandIn) -> None:
    async with StaticTokenCredential("someone-elses-token") as credential:
        checker = GraphMembershipChecker(credential, base_url=graph.base_url, ca_file=graph.ca_path)
        try:
            with pytest.raises(MembershipUnavailable, match="401"):
                await checker.member_of(USER, GROUPS)
        finally:
            await checker.close()


async def test_no_identity_is_unavailable_not_an_error(graph: GraphStandIn) -> None:
    class NoIdentity(StaticTokenCredential):
        async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise CredentialUnavailableError("no identity configured")

    async with NoIdentity() as credential:
        checker = GraphMembershipChecker(credential, base_url=graph.base_url, ca_file=graph.ca_path)
        with pytest.raises(MembershipUnavailable, match="no Graph token"):
            await checker.member_of(USER, GROUPS)
    assert graph.membership_checks == []


async def test_an_untrusted_certificate_is_unavailable(graph: GraphStandIn) -> None:
    async with StaticTokenCredential(graph.token) as credential:
        checker = GraphMembershipChecker(credential, base_url=graph.base_url)  # the stand-in's CA not trusted
        try:
            with pytest.raises(MembershipUnavailable):
                await checker.member_of(USER, GROUPS)
        finally:
            await checker.close()


async def test_only_an_object_id_and_one_to_twenty_groups_are_asked_and_only_over_https(
    checker: GraphMembershipChecker, graph: GraphStandIn
) -> None:
    for user, groups in (("../groups/x", GROUPS), ("someone@example.be", GROUPS), (USER, [GROUPS[0]] * 21),
                         (USER, [])):
        with pytest.raises(ValueError):
            await checker.member_of(user, groups)
    assert graph.requests == []
    with pytest.raises(ValueError, match="https"):
        GraphMembershipChecker(StaticTokenCredential(), base_url="http://graph.example")
