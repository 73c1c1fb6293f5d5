"""The token validator's key cache: rotation, refresh limits, and keeping old keys when a refresh fails."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from bot.teams.token_validation import (
    KEYS_MAX_AGE_SECONDS,
    REFRESH_COOLDOWN_SECONDS,
    IdentityProviderUnavailableError,
    NotAuthenticatedError,
    TokenValidator,
)
from tests.support.openid_standin import APP_ID, OpenIdStandIn, new_key, openid_standin

SERVICE_URL = "https://smba.trafficmanager.net/emea/"


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def keys() -> AsyncIterator[OpenIdStandIn]:
    async with openid_standin() as standin:
        yield standin


@pytest.fixture
async def validator(keys: OpenIdStandIn) -> AsyncIterator[tuple[TokenValidator, Ticks]]:
    ticks = Ticks()
    checker = TokenValidator(app_id=APP_ID, metadata_url=keys.metadata_url, monotonic=ticks)
    yield checker, ticks
    await checker.close()


async def _check(checker: TokenValidator, token: str) -> dict[str, object]:
    return await checker.validate(f"Bearer {token}", channel_id="msteams", service_url=SERVICE_URL)


async def test_claims_of_a_valid_token(keys: OpenIdStandIn, validator: tuple[TokenValidator, Ticks]) -> None:
    checker, _ = validator
    claims = await _check(checker, keys.token(SERVICE_URL))
    assert claims["aud"] == APP_ID and claims["serviceurl"] == SERVICE_URL


async def test_a_rotated_key_is_learnt_but_unknown_kids_cannot_force_a_fetch_each(
    keys: OpenIdStandIn, validator: tuple[TokenValidator, Ticks]
) -> None:
    checker, ticks = validator
    await _check(checker, keys.token(SERVICE_URL))
    stranger = new_key("not-published")
    ticks.now += REFRESH_COOLDOWN_SECONDS + 1
    for _ in range(5):
        with pytest.raises(NotAuthenticatedError):
            await _check(checker, keys.token(SERVICE_URL, key=stranger))
    assert keys.fetches.count("keys") == 2, "the first unknown kid refreshes once; the rest wait for the cooldown"
    rotated = keys.rotate("key-2")
    ticks.now += REFRESH_COOLDOWN_SECONDS + 1
    await _check(checker, keys.token(SERVICE_URL, key=rotated))
    assert keys.fetches.count("keys") == 3


async def test_keys_are_refreshed_after_a_day_and_kept_when_the_refresh_fails(
    keys: OpenIdStandIn, validator: tuple[TokenValidator, Ticks]
) -> None:
    checker, ticks = validator
    await _check(checker, keys.token(SERVICE_URL))
    ticks.now += KEYS_MAX_AGE_SECONDS + 1
    keys.failing = True
    await _check(checker, keys.token(SERVICE_URL))  # stale keys beat no keys
    assert keys.fetches.count("metadata") == 2


async def test_no_keys_at_all_is_unavailable_not_unauthenticated(
    keys: OpenIdStandIn, validator: tuple[TokenValidator, Ticks]
) -> None:
    checker, _ = validator
    keys.failing = True
    with pytest.raises(IdentityProviderUnavailableError):
        await _check(checker, keys.token(SERVICE_URL))


async def test_a_service_url_differing_only_in_case_or_final_slash_is_the_same(
    keys: OpenIdStandIn, validator: tuple[TokenValidator, Ticks]
) -> None:
    checker, _ = validator
    await checker.validate(f"Bearer {keys.token(SERVICE_URL.upper().rstrip('/'))}", channel_id="msteams",
                           service_url=SERVICE_URL)


async def test_stale_keys_and_a_failing_provider_are_asked_once_per_cooldown_not_per_request(
    keys: OpenIdStandIn, validator: tuple[TokenValidator, Ticks]
) -> None:
    """Past a day, any request (an unauthenticated one with a made-up key id too) started a fetch: one request
    to the identity provider for each one to the bot, at the sender's rate, while the provider was failing.
    The made-up key id is 503, not 401: with the provider failing it cannot be told from a new key."""
    checker, ticks = validator
    await _check(checker, keys.token(SERVICE_URL))
    ticks.now += KEYS_MAX_AGE_SECONDS + 1
    keys.failing = True
    stranger = new_key("made-up")
    for _ in range(20):
        with pytest.raises(IdentityProviderUnavailableError):
            await _check(checker, keys.token(SERVICE_URL, key=stranger))
    assert keys.fetches.count("metadata") == 2, "the first load, then one refresh in the cooldown"
    await _check(checker, keys.token(SERVICE_URL))  # the stale keys still serve Teams
    ticks.now += REFRESH_COOLDOWN_SECONDS + 1
    await _check(checker, keys.token(SERVICE_URL))
    assert keys.fetches.count("metadata") == 3, "asked again once the cooldown is over"


async def test_stale_keys_and_a_silent_provider_hold_up_one_request_per_cooldown(keys: OpenIdStandIn) -> None:
    ticks = Ticks()
    checker = TokenValidator(app_id=APP_ID, metadata_url=keys.metadata_url, monotonic=ticks, fetch_timeout=0.3)
    try:
        await _check(checker, keys.token(SERVICE_URL))
        ticks.now += KEYS_MAX_AGE_SECONDS + 1
        keys.silent = True
        waits = []
        for _ in range(6):
            started = time.monotonic()
            await _check(checker, keys.token(SERVICE_URL))
            waits.append(time.monotonic() - started)
        assert waits[0] >= 0.25 and max(waits[1:]) < 0.25, [round(wait, 2) for wait in waits]
    finally:
        await checker.close()


async def test_a_rotated_key_while_the_provider_fails_is_unavailable_not_unauthenticated(
    keys: OpenIdStandIn, validator: tuple[TokenValidator, Ticks]
) -> None:
    """The Bot Framework starts signing with a new key while its key endpoint fails (or is slow) for a moment.

    The key id is unknown because it could not be looked up, not because the token is forged: a 401 is final for
    the Bot Framework (the referrer's "nieuw" or "status" is lost without a word), a 503 makes it send the
    activity again, and the copies that come during the cooldown must not be refused for good either.
    """
    checker, ticks = validator
    await _check(checker, keys.token(SERVICE_URL))
    ticks.now += REFRESH_COOLDOWN_SECONDS + 1
    rotated = keys.rotate("key-2")
    keys.failing = True
    for _ in range(2):  # the request that tried the refresh, then one inside the cooldown
        with pytest.raises(IdentityProviderUnavailableError):
            await _check(checker, keys.token(SERVICE_URL, key=rotated))
        ticks.now += 5
    assert keys.fetches.count("metadata") == 2, "the copy inside the cooldown asked the provider again"
    keys.failing = False
    ticks.now += REFRESH_COOLDOWN_SECONDS
    assert (await _check(checker, keys.token(SERVICE_URL, key=rotated)))["aud"] == APP_ID
    with pytest.raises(NotAuthenticatedError):  # after a look-up that succeeded, an unknown key id is forged
        await _check(checker, keys.token(SERVICE_URL, key=new_key("made-up")))


async def test_a_rotated_key_while_the_provider_is_silent_is_unavailable_until_the_keys_come(
    keys: OpenIdStandIn,
) -> None:
    """A look-up that timed out, its fetch still under way, tells nothing about the key id either: 503."""
    ticks = Ticks()
    checker = TokenValidator(app_id=APP_ID, metadata_url=keys.metadata_url, monotonic=ticks, fetch_timeout=0.2)
    try:
        await _check(checker, keys.token(SERVICE_URL))
        ticks.now += REFRESH_COOLDOWN_SECONDS + 1
        rotated = keys.rotate("key-2")
        keys.silent = True
        for _ in range(2):  # the request that waited for the fetch, then one inside the cooldown
            with pytest.raises(IdentityProviderUnavailableError):
                await _check(checker, keys.token(SERVICE_URL, key=rotated))
        assert keys.fetches.count("metadata") == 2
    finally:
        await checker.close()
