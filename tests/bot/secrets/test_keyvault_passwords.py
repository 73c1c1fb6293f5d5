"""The Key Vault password provider, with the real async SecretClient against a local vault stand-in."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from azure.core.exceptions import HttpResponseError
from azure.identity.aio import ManagedIdentityCredential

from bot.core.protocols import DataSharingProtocol, Party
from bot.secrets.keyvault_passwords import (
    KeyVaultZipPasswordProvider,
    create_secret_client,
    default_credential,
    read_failure_cause,
)
from bot.secrets.zip_passwords import ZipPasswordError
from tests.support.clock import ManualClock
from tests.support.keyvault_provider import reads_answered, until
from tests.support.keyvault_standin import (
    DEFAULT_TOKEN,
    VAULT_RESOURCE,
    KeyVaultStandIn,
    StaticTokenCredential,
    keyvault_standin,
    managed_identity_standin,
    use_managed_identity,
)
from tests.support.smtp_server import free_port

SECRET = "zip-password-kg-ocmw-gent"
PASSWORD = "K7M2QX9PLR4TWB8N6VHJ3CZD"
ROTATED = "P3W8ZKQ2M7XRT4NBH6JC9LVD"
TTL = dt.timedelta(minutes=10)


def protocol(secret_name: str = SECRET) -> DataSharingProtocol:
    return DataSharingProtocol(
        id="kg-ocmw-gent",
        title="Doorverwijzing Kind en Gezin - OCMW Gent",
        sender=Party("Kind en Gezin", "Regioteam Gent"),
        recipient=Party("OCMW Gent", "Sociale dienst"),
        recipient_municipality="Gent",
        recipient_mailbox="sociale.dienst@ocmw.gent.example",
        postal_codes=frozenset({"9000"}),
        places=("Gent",),
        in_force_from=dt.date(2026, 3, 1),
        ends_on=None,
        zip_password_secret=secret_name,
        sender_dpo="dpo@kindengezin.example",
        recipient_dpo="dpo@ocmw.gent.example",
        source=Path("protocols/kg-ocmw-gent.toml"),
    )


class RecordingSleep:
    """Stands in for asyncio.sleep: remembers what was asked and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
async def vault() -> AsyncIterator[KeyVaultStandIn]:
    async with keyvault_standin() as standin:
        yield standin


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


ProviderFactory = Callable[..., KeyVaultZipPasswordProvider]


@pytest.fixture
async def make_provider(
    vault: KeyVaultStandIn, clock: ManualClock, sleep: RecordingSleep
) -> AsyncIterator[ProviderFactory]:
    """Builds providers on the real SecretClient, without the SDK's own retries; closes them afterwards."""
    made: list[KeyVaultZipPasswordProvider] = []

    def make(*, vault_url: str | None = None, credential: Any = None, **options: Any) -> KeyVaultZipPasswordProvider:
        credential = credential or StaticTokenCredential()
        client = create_secret_client(
            vault_url or vault.url,
            credential,
            connection_verify=str(vault.ca_path),
            verify_challenge_resource=False,
            retry_total=0,
        )
        settings: dict[str, Any] = {"clock": clock, "sleep": sleep, "jitter": lambda: 0.0, "credential": credential}
        provider = KeyVaultZipPasswordProvider(client, **(settings | options))
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


async def test_reads_the_latest_password_with_its_version(
    vault: KeyVaultStandIn, make_provider: ProviderFactory
) -> None:
    vault.set_secret(SECRET, "an-older-password-0123")
    version = vault.set_secret(SECRET, PASSWORD)

    password = await make_provider().password_for(protocol())

    assert password.value == PASSWORD.encode("ascii")
    assert password.version == version
    assert PASSWORD not in repr(password) and PASSWORD not in password.version


async def test_the_challenge_is_answered_with_the_bearer_token(
    vault: KeyVaultStandIn, make_provider: ProviderFactory
) -> None:
    vault.set_secret(SECRET, PASSWORD)
    credential = StaticTokenCredential()

    await make_provider(credential=credential).password_for(protocol())

    first, second = vault.requests
    assert (first.authorization, first.status) == (None, 401)
    assert (second.authorization, second.status) == (f"Bearer {DEFAULT_TOKEN}", 200)
    assert second.path == f"/secrets/{SECRET}/" and "api-version" in second.query
    assert credential.scopes == [(f"{VAULT_RESOURCE}/.default",)]


async def test_the_password_is_cached_until_the_ttl_then_a_rotation_is_seen(
    vault: KeyVaultStandIn, make_provider: ProviderFactory, clock: ManualClock
) -> None:
    first_version = vault.set_secret(SECRET, PASSWORD)
    provider = make_provider(cache_ttl=TTL)
    assert (await provider.password_for(protocol())).version == first_version
    reads = len(vault.authenticated)

    rotated_version = vault.set_secret(SECRET, ROTATED)
    clock.advance(TTL - dt.timedelta(seconds=1))
    cached = await provider.password_for(protocol())
    assert (cached.value, cached.version) == (PASSWORD.encode(), first_version)
    assert len(vault.authenticated) == reads

    clock.advance(dt.timedelta(seconds=1))
    fresh = await provider.password_for(protocol())
    assert (fresh.value, fresh.version) == (ROTATED.encode(), rotated_version)
    assert len(vault.authenticated) == reads + 1


async def test_concurrent_callers_share_one_read(vault: KeyVaultStandIn, make_provider: ProviderFactory) -> None:
    vault.set_secret(SECRET, PASSWORD)
    vault.delay = 0.2
    provider = make_provider()

    passwords = await asyncio.gather(*(provider.password_for(protocol()) for _ in range(5)))

    assert len(set(passwords)) == 1
    assert len(vault.authenticated) == 1


@pytest.mark.parametrize("weak", ["short-pw", "wachtwoord-met-é-erin", "x" * 100], ids=["short", "non-ascii", "long"])
async def test_weak_secrets_are_refused_without_showing_them(
    vault: KeyVaultStandIn, make_provider: ProviderFactory, weak: str
) -> None:
    vault.set_secret(SECRET, weak)

    with pytest.raises(ZipPasswordError) as raised:
        await make_provider().password_for(protocol())

    assert SECRET in str(raised.value) and weak not in str(raised.value)
    assert raised.value.transient is False


async def test_a_missing_secret_is_reported_at_once(
    vault: KeyVaultStandIn, make_provider: ProviderFactory, sleep: RecordingSleep
) -> None:
    with pytest.raises(ZipPasswordError) as raised:
        await make_provider().password_for(protocol())

    assert str(raised.value) == f"Key Vault secret '{SECRET}' does not exist"
    assert raised.value.transient is False
    assert len(vault.authenticated) == 1 and sleep.delays == []


async def test_access_denied_is_reported_at_once(
    vault: KeyVaultStandIn, make_provider: ProviderFactory, sleep: RecordingSleep
) -> None:
    vault.set_secret(SECRET, PASSWORD)
    vault.fail_next(403, times=5)

    with pytest.raises(ZipPasswordError) as raised:
        await make_provider().password_for(protocol())

    assert "access denied" in str(raised.value) and SECRET in str(raised.value)
    assert raised.value.transient is False
    assert len(vault.authenticated) == 1 and sleep.delays == []


async def test_a_disabled_secret_is_named_as_disabled_not_as_access_denied(
    vault: KeyVaultStandIn, make_provider: ProviderFactory, sleep: RecordingSleep
) -> None:
    """Key Vault answers a disabled secret with 403 Forbidden, inner code SecretDisabled: the fix is the secret, not
    the role on the vault."""
    vault.set_secret(SECRET, PASSWORD)
    vault.disable(SECRET)

    with pytest.raises(ZipPasswordError) as raised:
        await make_provider().password_for(protocol())

    message = str(raised.value)
    assert SECRET in message and "is disabled" in message, message
    assert "enable it" in message and "new version" in message, message
    assert "access denied" not in message and PASSWORD not in message
    assert raised.value.transient is False
    assert len(vault.authenticated) == 1 and sleep.delays == []
    client = create_secret_client(vault.url, StaticTokenCredential(), connection_verify=str(vault.ca_path),
                                  verify_challenge_resource=False, retry_total=0)
    async with client:
        with pytest.raises(HttpResponseError) as answered:
            await client.get_secret(SECRET)
    assert read_failure_cause(answered.value) == "disabled", "the metric's cause, which the alert names"

    vault.set_secret(SECRET, PASSWORD + "-2")  # a new, enabled version: read at once
    assert (await make_provider().password_for(protocol())).value == (PASSWORD + "-2").encode("ascii")


async def test_a_token_the_vault_rejects_is_access_denied(
    vault: KeyVaultStandIn, make_provider: ProviderFactory, sleep: RecordingSleep
) -> None:
    vault.set_secret(SECRET, PASSWORD)

    with pytest.raises(ZipPasswordError) as raised:
        await make_provider(credential=StaticTokenCredential("a-token-from-another-tenant")).password_for(protocol())

    assert "access denied" in str(raised.value) and raised.value.transient is False
    assert sleep.delays == []


@pytest.mark.parametrize(
    ("failure", "listening", "chained"),
    [
        (web.HTTPServiceUnavailable, True, True),
        (web.HTTPServiceUnavailable, False, True),
        (web.HTTPForbidden, True, False),
    ],
    ids=["503", "not listening", "its own 403, in ManagedIdentityCredential's error"],
)
async def test_no_token_from_the_identity_endpoint_is_retried_not_access_denied(
    monkeypatch: pytest.MonkeyPatch,
    vault: KeyVaultStandIn,
    make_provider: ProviderFactory,
    sleep: RecordingSleep,
    failure: type[web.HTTPException],
    listening: bool,
    chained: bool,
) -> None:
    """App Service's identity endpoint failing (a platform hiccup, a container's first seconds):
    azure-identity raises ClientAuthenticationError, but the vault never said no. The referrer should
    read "probeer zo opnieuw", not "tell the functional administrator"."""
    vault.set_secret(SECRET, PASSWORD)

    async def unavailable(token: str) -> None:
        raise failure()

    async with managed_identity_standin(on_issue=unavailable) as identity:
        endpoint = identity.endpoint if listening else f"http://127.0.0.1:{free_port()}/msi/token"
        use_managed_identity(monkeypatch, endpoint, identity.header)
        credential = default_credential(None) if chained else ManagedIdentityCredential()  # wiring: the first
        provider = make_provider(credential=credential, attempts=2)
        with pytest.raises(ZipPasswordError) as raised:
            await provider.password_for(protocol())

    assert vault.authenticated == [], "the vault never saw a token, let alone refused one"
    assert raised.value.transient is True, str(raised.value)
    assert "access denied" not in str(raised.value)
    assert re.search(r"\(no token for the vault: \w+Error\)$", str(raised.value)), str(raised.value)
    assert len(sleep.delays) == 1, "the provider's own retries apply"


@pytest.mark.parametrize(("retry_after", "expected_delay"), [("7", 7.0), ("120", 30.0)], ids=["honoured", "capped"])
async def test_throttling_waits_as_long_as_the_vault_asks(
    vault: KeyVaultStandIn,
    make_provider: ProviderFactory,
    sleep: RecordingSleep,
    retry_after: str,
    expected_delay: float,
) -> None:
    vault.set_secret(SECRET, PASSWORD)
    vault.fail_next(429, retry_after=retry_after)

    password = await make_provider().password_for(protocol())

    assert password.value == PASSWORD.encode()
    assert [seen.status for seen in vault.authenticated] == [429, 200]
    assert sleep.delays == [expected_delay]


async def test_an_unavailable_vault_is_retried_with_exponential_backoff(
    vault: KeyVaultStandIn, make_provider: ProviderFactory, sleep: RecordingSleep, caplog: pytest.LogCaptureFixture
) -> None:
    vault.set_secret(SECRET, PASSWORD)
    vault.fail_next(503, times=2)

    with caplog.at_level(logging.WARNING, logger="bot.secrets.keyvault_passwords"):
        password = await make_provider(backoff_seconds=0.5, jitter=lambda: 1.0).password_for(protocol())

    assert password.value == PASSWORD.encode()
    assert [seen.status for seen in vault.authenticated] == [503, 503, 200]
    assert sleep.delays == [0.5, 1.0]
    assert [record.secret for record in caplog.records] == [SECRET, SECRET]  # type: ignore[attr-defined]
    assert all(PASSWORD not in record.getMessage() for record in caplog.records)


async def test_jitter_spreads_the_backoff_between_half_and_full(
    vault: KeyVaultStandIn, make_provider: ProviderFactory, sleep: RecordingSleep
) -> None:
    vault.set_secret(SECRET, PASSWORD)
    vault.fail_next(500, times=3)

    await make_provider(backoff_seconds=1.0, jitter=lambda: 0.5).password_for(protocol())

    assert sleep.delays == [0.75, 1.5, 3.0]


async def test_a_vault_that_stays_unavailable_gives_a_transient_error(
    vault: KeyVaultStandIn, make_provider: ProviderFactory, sleep: RecordingSleep
) -> None:
    vault.set_secret(SECRET, PASSWORD)
    vault.fail_next(503, times=10)

    with pytest.raises(ZipPasswordError) as raised:
        await make_provider(attempts=4).password_for(protocol())

    assert raised.value.transient is True and SECRET in str(raised.value)
    assert len(vault.authenticated) == 4
    assert len(sleep.delays) == 3


async def test_a_slow_vault_cannot_hang_a_referral(
    vault: KeyVaultStandIn, make_provider: ProviderFactory, sleep: RecordingSleep
) -> None:
    vault.set_secret(SECRET, PASSWORD)
    vault.delay = 10.0
    provider = make_provider(attempts=2, timeout_seconds=0.3)

    started = time.monotonic()
    with pytest.raises(ZipPasswordError) as raised:
        await provider.password_for(protocol())

    assert time.monotonic() - started < 2.0
    assert raised.value.transient is True
    assert len(vault.authenticated) == 2 and len(sleep.delays) == 1


async def test_an_unreachable_vault_gives_a_transient_error(
    make_provider: ProviderFactory, sleep: RecordingSleep
) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    with pytest.raises(ZipPasswordError) as raised:
        await make_provider(vault_url=f"https://127.0.0.1:{closed_port}", attempts=3).password_for(protocol())

    assert raised.value.transient is True
    assert len(sleep.delays) == 2


async def test_close_closes_the_credential_too(make_provider: ProviderFactory) -> None:
    credential = StaticTokenCredential()
    provider = make_provider(credential=credential)

    await provider.close()

    assert credential.closed


@pytest.mark.parametrize("client_id", [None, "0b5d3c2a-1111-4222-8333-944455556666"], ids=["system", "user-assigned"])
async def test_default_credential_uses_the_managed_identity_endpoint(
    monkeypatch: pytest.MonkeyPatch, clock: ManualClock, client_id: str | None
) -> None:
    async with managed_identity_standin() as identity, keyvault_standin(token=identity.token) as vault:
        use_managed_identity(monkeypatch, identity.endpoint, identity.header)
        version = vault.set_secret(SECRET, PASSWORD)
        credential = default_credential(client_id)  # after the environment is set: it is read when built
        client = create_secret_client(
            vault.url, credential, connection_verify=str(vault.ca_path), verify_challenge_resource=False, retry_total=0
        )
        async with KeyVaultZipPasswordProvider(client, clock=clock, credential=credential) as provider:
            password = await asyncio.wait_for(provider.password_for(protocol()), 10)

    assert (password.value, password.version) == (PASSWORD.encode(), version)
    assert [request["resource"] for request in identity.requests] == [VAULT_RESOURCE]
    assert identity.requests[0].get("client_id") == client_id
    assert vault.authenticated[0].authorization == f"Bearer {identity.token}"


# -- a waiter that gives up does not cancel the fetch (issue 10) ----------------------------------


async def test_a_waiter_that_gives_up_leaves_the_fetch_running_and_it_fills_the_cache(
    vault: KeyVaultStandIn, make_provider: ProviderFactory
) -> None:
    """The vault answers after the caller's budget (4.5 s against 4 s in production, scaled down here)."""
    version = vault.set_secret(SECRET, PASSWORD)
    vault.delay = 0.5
    provider = make_provider()

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(provider.password_for(protocol()), 0.3)
    await until(lambda: reads_answered(vault)[-1:] == [200], 5, "the vault answered the fetch the waiter left behind")

    vault.delay = 30.0  # a new read would now hang: only the cache can answer in time
    password = await asyncio.wait_for(provider.password_for(protocol()), 2)
    assert (password.value, password.version) == (PASSWORD.encode(), version)
    assert len(vault.authenticated) == 1


async def test_a_fetch_throttled_beyond_the_waiters_budget_still_fills_the_cache(
    vault: KeyVaultStandIn, make_provider: ProviderFactory
) -> None:
    """429 with Retry-After 5: the fetch waits the 5 s (a tenth of it here) and reads again, unwatched."""
    version = vault.set_secret(SECRET, PASSWORD)
    vault.fail_next(429, retry_after="5")
    asked: list[float] = []

    async def scaled_sleep(seconds: float) -> None:
        asked.append(seconds)
        await asyncio.sleep(seconds / 10)

    provider = make_provider(sleep=scaled_sleep)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(provider.password_for(protocol()), 0.3)
    await until(lambda: reads_answered(vault)[-1:] == [200], 5, "the fetch read again after the vault's Retry-After")

    vault.delay = 30.0
    password = await asyncio.wait_for(provider.password_for(protocol()), 2)
    assert password.version == version
    assert asked == [5.0]
    assert [seen.status for seen in vault.authenticated] == [429, 200]


async def test_callers_sharing_a_fetch_do_not_cancel_it_for_each_other(
    vault: KeyVaultStandIn, make_provider: ProviderFactory
) -> None:
    vault.set_secret(SECRET, PASSWORD)
    vault.delay = 0.5
    provider = make_provider()

    impatient = asyncio.create_task(asyncio.wait_for(provider.password_for(protocol()), 0.2))
    patient = asyncio.create_task(asyncio.wait_for(provider.password_for(protocol()), 5))

    with pytest.raises(TimeoutError):
        await impatient
    assert (await patient).value == PASSWORD.encode()
    assert len(vault.authenticated) == 1


# -- kept warm: fetched at start, refreshed before it expires, in the background ---------------------

OTHER_SECRET = "zip-password-kg-ocmw-lokeren"
OTHER_PASSWORD = "H6JC9LVDP3W8ZKQ2M7XRT4NB"


def other_protocol() -> DataSharingProtocol:
    return dataclasses.replace(protocol(OTHER_SECRET), id="kg-ocmw-lokeren")


async def test_keep_warm_fetches_every_password_in_force_without_being_asked(
    vault: KeyVaultStandIn, make_provider: ProviderFactory
) -> None:
    vault.set_secret(SECRET, PASSWORD)
    vault.set_secret(OTHER_SECRET, OTHER_PASSWORD)
    provider = make_provider(refresh_check_seconds=0.02)
    in_force = [protocol(), dataclasses.replace(protocol(), id="kg-ocmw-gent-2"), other_protocol()]

    warming = asyncio.create_task(provider.keep_warm(lambda: in_force))
    await until(lambda: reads_answered(vault) == [200, 200], 5, "both secrets were read")
    vault.delay = 30.0  # from here on only the cache answers in time
    first, second = await asyncio.wait_for(
        asyncio.gather(provider.password_for(protocol()), provider.password_for(other_protocol())), 1
    )
    warming.cancel()
    with pytest.raises(asyncio.CancelledError):
        await warming

    assert (first.value, second.value) == (PASSWORD.encode(), OTHER_PASSWORD.encode())
    assert sorted(seen.path for seen in vault.authenticated) == [f"/secrets/{SECRET}/", f"/secrets/{OTHER_SECRET}/"]


async def test_a_password_is_refreshed_at_80_percent_of_its_cache_time_and_a_rotation_is_picked_up(
    vault: KeyVaultStandIn, make_provider: ProviderFactory, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    first_version = vault.set_secret(SECRET, PASSWORD)
    provider = make_provider(cache_ttl=TTL)
    await provider.refresh_due([protocol()])
    rotated_version = vault.set_secret(SECRET, ROTATED)

    clock.advance(TTL * 0.8 - dt.timedelta(seconds=1))
    await provider.refresh_due([protocol()])
    assert len(vault.authenticated) == 1, "not due yet"
    assert (await provider.password_for(protocol())).version == first_version

    clock.advance(dt.timedelta(seconds=1))
    with caplog.at_level(logging.INFO, logger="bot.secrets.keyvault_passwords"):
        await provider.refresh_due([protocol()])
    assert len(vault.authenticated) == 2
    vault.delay = 30.0
    fresh = await asyncio.wait_for(provider.password_for(protocol()), 1)
    assert (fresh.value, fresh.version) == (ROTATED.encode(), rotated_version)
    assert rotated_version in caplog.text and ROTATED not in caplog.text

    clock.advance(TTL * 0.9)  # the refreshed value lives a full cache time from its own read
    assert (await asyncio.wait_for(provider.password_for(protocol()), 1)).version == rotated_version


async def test_a_failed_refresh_keeps_the_old_password_until_it_truly_expires(
    vault: KeyVaultStandIn, make_provider: ProviderFactory, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    version = vault.set_secret(SECRET, PASSWORD)
    provider = make_provider(cache_ttl=TTL, attempts=2)
    await provider.refresh_due([protocol()])
    vault.fail_next(503, times=10)

    clock.advance(TTL * 0.9)
    with caplog.at_level(logging.WARNING, logger="bot.secrets.keyvault_passwords"):
        await provider.refresh_due([protocol()])
    kept = await provider.password_for(protocol())
    assert (kept.value, kept.version) == (PASSWORD.encode(), version)
    [warning] = [record for record in caplog.records if "stays in use" in record.getMessage()]
    assert warning.levelno == logging.WARNING and warning.secret == SECRET  # type: ignore[attr-defined]
    assert version in warning.getMessage() and PASSWORD not in caplog.text

    clock.advance(TTL * 0.1)  # now it has truly expired, and the vault still fails
    with pytest.raises(ZipPasswordError) as raised:
        await provider.password_for(protocol())
    assert raised.value.transient is True
    assert "no password" in caplog.text


async def test_keep_warm_survives_a_vault_that_fails_at_start_and_picks_the_secret_up_later(
    vault: KeyVaultStandIn, make_provider: ProviderFactory, caplog: pytest.LogCaptureFixture
) -> None:
    provider = make_provider(refresh_check_seconds=0.02)
    calls = 0

    def in_force() -> list[DataSharingProtocol]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("a bug in the caller's list")
        return [protocol()]

    warming = asyncio.create_task(provider.keep_warm(in_force))
    await until(lambda: reads_answered(vault)[:1] == [404], 5, "the first read at start")
    version = vault.set_secret(SECRET, PASSWORD)  # the operator adds the missing secret
    await until(lambda: reads_answered(vault)[-1:] == [200], 5, "a later look read it")
    assert not warming.done()
    warming.cancel()
    with pytest.raises(asyncio.CancelledError):
        await warming

    vault.delay = 30.0
    assert (await asyncio.wait_for(provider.password_for(protocol()), 1)).version == version
    assert "does not exist" in caplog.text and "keeping the Key Vault passwords warm failed" in caplog.text


async def test_without_a_cache_time_nothing_is_kept_warm(
    vault: KeyVaultStandIn, make_provider: ProviderFactory
) -> None:
    vault.set_secret(SECRET, PASSWORD)
    provider = make_provider(cache_ttl=dt.timedelta(0))

    await asyncio.wait_for(provider.keep_warm(lambda: [protocol()]), 1)

    assert vault.authenticated == []


async def test_close_ends_a_fetch_no_one_waits_for(vault: KeyVaultStandIn, make_provider: ProviderFactory) -> None:
    vault.set_secret(SECRET, PASSWORD)
    vault.delay = 30.0
    provider = make_provider()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(provider.password_for(protocol()), 0.2)

    await asyncio.wait_for(provider.close(), 2)
