"""The Bot Framework token for proactive Teams messages while the identity endpoint hangs.

With `MicrosoftAppType=UserAssignedMSI` (the template's default) the connector token comes from App
Service's managed-identity endpoint (here the stand-in, through IDENTITY_ENDPOINT and IDENTITY_HEADER)
through the real MSAL, which is synchronous and runs in a thread of the event loop's default executor.
That executor also resolves every host name the bot connects to (PostgreSQL, Key Vault, Graph, the
SMTP relay, the Teams service URL), so an endpoint that takes the request and never answers (a stuck
sidecar, a request lost in flight) must cost one bounded wait, not a thread per caller for ever.
"""

from __future__ import annotations

import asyncio

import pytest

from bot.config import BotIdentity
from bot.teams.connector import MsalConnectorToken
from tests.support.keyvault_standin import (
    MANAGED_IDENTITY_TOKEN,
    IdentityOutage,
    managed_identity_standin,
    use_managed_identity,
)

APP_ID = "00000000-0000-0000-0000-00000000b0b1"


async def test_a_silent_identity_endpoint_does_not_use_up_the_loops_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    outage = IdentityOutage(silent=True)
    async with managed_identity_standin(on_issue=outage.before_issue) as identity:
        use_managed_identity(monkeypatch, identity.endpoint, identity.header)
        source = MsalConnectorToken(BotIdentity(app_id=APP_ID, app_type="UserAssignedMSI"))
        try:
            # What the message outbox (its send is cut off at the lease) and the turns' replies (7 s) do:
            # wait for the token, give up, and try again later.
            for _ in range(8):
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(source.token(), 0.5)

            try:
                await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo("localhost", 5432), 5)
            except TimeoutError:
                pytest.fail("after 8 unanswered token requests the event loop cannot resolve a host name any more: "
                            "every thread of its default executor is stuck in MSAL's request without a timeout")

            outage.silent = False  # the endpoint answers again; the request it took stays unanswered
            try:
                token = await asyncio.wait_for(source.token(), 30)
            except TimeoutError:
                pytest.fail("the identity endpoint answers again, yet no Teams token can be had")
        finally:
            outage.end()

    assert token == MANAGED_IDENTITY_TOKEN
    assert len(identity.requests) == 2, "the request that went unanswered, then one after its time limit"
