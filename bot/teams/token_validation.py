"""Is this request really from the Bot Framework, for this bot, about this conversation? (JWT validation)

The Bot Framework signs every request to the bot with a key it publishes: OpenID metadata at
`https://login.botframework.com/v1/.well-known/openidconfiguration` names the key set
(`jwks_uri`); each key lists the channels it endorses. A request proves itself when its bearer
token is signed (RS256) by such a key that endorses the activity's channel, is issued by
`https://api.botframework.com` for this bot's app id, is not expired, and names in its
`serviceurl` claim the service URL the activity asks the bot to answer to.

The keys are fetched with a bounded asynchronous HTTP call (never blocking the event loop), once
for all requests waiting on them, and kept for a day; an unknown key id triggers at most one
early refresh per `REFRESH_COOLDOWN`. When they cannot be had in time the answer is 503 (the
caller retries), never a hang and never a 500. An unknown key id is 401 only when the last look-up
succeeded; after one that failed or timed out (and through its cooldown) it is 503 as well: a key the
Bot Framework has just begun to sign with looks the same, and it does not send a 401's request again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

logger = logging.getLogger(__name__)

BOT_FRAMEWORK_OPENID_METADATA = "https://login.botframework.com/v1/.well-known/openidconfiguration"
BOT_FRAMEWORK_ISSUER = "https://api.botframework.com"
KEY_FETCH_TIMEOUT_SECONDS = 5.0
KEYS_MAX_AGE_SECONDS = 24 * 3600.0
REFRESH_COOLDOWN_SECONDS = 60.0
CLOCK_SKEW_SECONDS = 300
MAX_TOKEN_CHARS = 16 * 1024


class NotAuthenticatedError(Exception):
    """The token does not prove the request comes from the Bot Framework for this bot: 401.

    `signed_refusal` says why a token the Bot Framework's own key did sign was refused ("audience", "issuer",
    "time", "claims", "service_url", "channel"): no stranger sent it, so every real Teams request is likely
    refused the same way (a wrong MicrosoftAppId, a clock far off) and `advice` says what to check. None when
    nothing proved the token (no token, a key nobody published, a forged signature): the internet's noise, with
    `advice` only for a token Entra ID says it issued for this app id (at most once a minute).
    """

    def __init__(self, message: str, *, signed_refusal: str | None = None, advice: str = "") -> None:
        super().__init__(message)
        self.signed_refusal = signed_refusal
        self.advice = advice


class IdentityProviderUnavailableError(Exception):
    """The signing keys could not be fetched in time, so no token can be checked now: 503."""


@dataclass(frozen=True)
class _SigningKey:
    key: Any  # what PyJWT verifies with
    endorsements: frozenset[str] | None  # channels the key may sign for; None when it does not say


class TokenValidator:
    """Validates Bot Framework bearer tokens for one app id."""

    def __init__(
        self,
        *,
        app_id: str,
        metadata_url: str = BOT_FRAMEWORK_OPENID_METADATA,
        issuer: str = BOT_FRAMEWORK_ISSUER,
        fetch_timeout: float = KEY_FETCH_TIMEOUT_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._app_id = app_id
        self._metadata_url = metadata_url
        self._issuer = issuer
        self._fetch_timeout = fetch_timeout
        self._monotonic = monotonic
        self._keys: dict[str, _SigningKey] = {}
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        # False while a look-up is under way and after one failed: an unknown key id may then be a new key.
        self._last_lookup_succeeded = False
        self._entra_warned_at: float | None = None
        self._pending: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def validate(self, authorization: str, *, channel_id: str, service_url: str) -> dict[str, Any]:
        """The token's claims when it proves itself; NotAuthenticatedError or IdentityProviderUnavailableError."""
        token = _bearer_token(authorization)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise NotAuthenticatedError("token is not a JWT") from error
        kid = header.get("kid")
        if header.get("alg") != "RS256" or not isinstance(kid, str) or not kid:
            raise NotAuthenticatedError("token not signed with RS256 and a key id")
        try:
            key = await self._key(kid)
        except NotAuthenticatedError as error:
            raise self._entra_issued(token) or error from None
        try:  # the signature first (PyJWT checks the claims only once it holds): a claim refused is a signed token's
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=["RS256"], audience=self._app_id, issuer=self._issuer,
                leeway=CLOCK_SKEW_SECONDS, options={"require": ["exp", "iss", "aud"]},
            )
        except _SIGNED_BUT_REFUSED as error:
            raise self._signed_refusal(error, token) from error
        except jwt.PyJWTError as error:
            raise NotAuthenticatedError(type(error).__name__) from error
        if key.endorsements is not None and channel_id not in key.endorsements:
            raise NotAuthenticatedError(
                "signing key does not endorse this channel", signed_refusal="channel",
                advice=f"its signing key does not endorse the '{channel_id}' channel: the Azure Bot's Teams channel "
                       "sends to this endpoint; another channel (Web Chat) does not belong here")
        if _normal_url(claims.get("serviceurl")) != _normal_url(service_url):
            raise NotAuthenticatedError(
                "serviceurl claim does not match the activity", signed_refusal="service_url",
                advice="its serviceurl claim is not the activity's serviceUrl: a proxy in front of the bot may "
                       "change the body, or the token belongs to another request")
        return claims

    def _entra_issued(self, token: str) -> NotAuthenticatedError | None:
        """A token Entra ID says it issued for this app id (its claims unproven: Entra's keys are not asked), with
        advice at most once per `ENTRA_WARNING_SECONDS`; None for any other token.

        The Agents SDK also accepts Entra ID's tokens of a tenant for the app id. Any application of that tenant
        can obtain one (unless the app's service principal requires assignment), and with it say it is Teams
        and any user, the DPO included; so they stay refused, and their refusal is said where an operator looks.
        """
        try:
            told = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        issuer, audience = told.get("iss"), told.get("aud")
        if not isinstance(issuer, str) or not _ENTRA_ISSUER.match(issuer) or audience not in (
                self._app_id, f"api://{self._app_id}"):
            return None
        now = self._monotonic()
        if self._entra_warned_at is not None and now - self._entra_warned_at < ENTRA_WARNING_SECONDS:
            return NotAuthenticatedError("token issued by Entra ID, not the Bot Framework")
        self._entra_warned_at = now
        return NotAuthenticatedError(
            "token issued by Entra ID, not the Bot Framework",
            advice=f"a token for this app id issued by Entra ID ({_shown(issuer)}), not by the Bot Framework, was "
                   "refused (401): this bot accepts only the Bot Framework's tokens (README, Token validation); "
                   "should every Teams request come so, the Azure Bot's configuration sends them")

    def _signed_refusal(self, error: jwt.PyJWTError, token: str) -> NotAuthenticatedError:
        """What to check when the Bot Framework's own key signed a token this bot refuses."""
        told = jwt.decode(token, options={"verify_signature": False})  # the signature held; only to name the claim
        if isinstance(error, jwt.InvalidAudienceError):
            reason = "audience"
            # Anyone who owns an Azure Bot holds such tokens for their own app id: the advice must not
            # read as "copy the id from this line", which would let that stranger in.
            advice = (f"it was signed for app id {_shown(told.get('aud'))}, and this bot's MicrosoftAppId is "
                      f"{self._app_id}: if the Azure Bot's app id (msaAppId, in the Azure portal) is not "
                      f"{self._app_id}, set MicrosoftAppId to it; if it is, another bot's token was sent here "
                      "and nothing needs to change (never copy the id this token was signed for)")
        elif isinstance(error, jwt.InvalidIssuerError):
            reason = "issuer"
            advice = f"its issuer is {_shown(told.get('iss'))}, not {self._issuer}"
        elif isinstance(error, jwt.MissingRequiredClaimError):
            reason = "claims"
            advice = f"it lacks the claim {error.claim!r}"
        else:
            reason = "time"
            advice = (f"it is expired or not yet valid by more than {CLOCK_SKEW_SECONDS} s: check this instance's "
                      "clock (NTP)")
        return NotAuthenticatedError(type(error).__name__, signed_refusal=reason, advice=advice)

    async def close(self) -> None:
        """Close the HTTP session (app shutdown)."""
        if self._pending is not None:
            self._pending.cancel()
        if self._session is not None:
            await self._session.close()

    async def _key(self, kid: str) -> _SigningKey:
        now = self._monotonic()
        fresh = self._fetched_at is not None and now - self._fetched_at < KEYS_MAX_AGE_SECONDS
        cooling = self._last_attempt is not None and now - self._last_attempt < REFRESH_COOLDOWN_SECONDS
        # Stale keys are refreshed, and an unknown key id looked up, at most once per cooldown: otherwise a
        # failing provider would be asked once per request (at any sender's rate) and hold each one up.
        if not self._keys or ((not fresh or kid not in self._keys) and not cooling):
            await self._refresh()
        key = self._keys.get(kid)
        if key is None:
            if not self._last_lookup_succeeded:
                raise IdentityProviderUnavailableError("unknown signing key, keys not looked up")
            raise NotAuthenticatedError("unknown signing key")
        return key

    async def _refresh(self) -> None:
        """Fetch the keys once for everyone waiting; keep the old ones when the fetch fails."""
        if self._pending is None or self._pending.done():
            self._last_attempt = self._monotonic()
            self._last_lookup_succeeded = False
            self._pending = asyncio.create_task(self._fetch())
            # A fetch that outlives every waiter still fills the cache; its failure is read here.
            self._pending.add_done_callback(lambda task: task.cancelled() or task.exception())
        try:
            await asyncio.wait_for(asyncio.shield(self._pending), self._fetch_timeout)
        except (TimeoutError, aiohttp.ClientError, ValueError, KeyError, TypeError, jwt.PyJWTError) as error:
            if not self._keys:
                raise IdentityProviderUnavailableError(type(error).__name__) from error
            logger.warning("signing keys not refreshed (%s); the ones from before are used", type(error).__name__)

    async def _fetch(self) -> None:
        session = self._session_for_fetching()
        timeout = aiohttp.ClientTimeout(total=self._fetch_timeout * 2)
        async with session.get(self._metadata_url, timeout=timeout) as response:
            response.raise_for_status()
            metadata = await response.json(content_type=None)
        jwks_uri = metadata["jwks_uri"]
        if not isinstance(jwks_uri, str) or not _trusted_url(jwks_uri, self._metadata_url):
            raise ValueError("jwks_uri must be https")
        async with session.get(jwks_uri, timeout=timeout) as response:
            response.raise_for_status()
            key_set = await response.json(content_type=None)
        keys: dict[str, _SigningKey] = {}
        for entry in key_set["keys"]:
            kid = entry.get("kid")
            if not isinstance(kid, str) or entry.get("kty") != "RSA":
                continue
            endorsements = entry.get("endorsements")
            keys[kid] = _SigningKey(
                key=jwt.PyJWK.from_dict(entry, algorithm="RS256").key,
                endorsements=frozenset(str(e) for e in endorsements) if isinstance(endorsements, list) else None,
            )
        if not keys:
            raise ValueError("no RSA signing keys published")
        self._keys = keys
        self._fetched_at = self._monotonic()
        self._last_lookup_succeeded = True
        logger.info("Bot Framework signing keys fetched: %d", len(keys))

    def _session_for_fetching(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session


def _bearer_token(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS or any(c.isspace() for c in token):
        raise NotAuthenticatedError("no bearer token")
    return token


def _trusted_url(url: str, metadata_url: str) -> bool:
    """https, or plain http on this machine when the metadata itself comes from there (a test stand-in)."""
    loopback = ("http://127.0.0.1:", "http://localhost:")
    return url.startswith("https://") or (url.startswith(loopback) and metadata_url.startswith(loopback))


#: Entra ID's issuers of a tenant's tokens, v1 and v2 (the public cloud's).
_ENTRA_ISSUER = re.compile(r"^https://(sts\.windows\.net/[0-9a-fA-F-]{36}/|login\.microsoftonline\.com/[0-9a-fA-F-]{36}/v2\.0)$")
#: An Entra ID token's refusal is a WARNING at most this often (anyone can make one up: the log stays readable).
ENTRA_WARNING_SECONDS = 60.0
#: PyJWT's refusals of a claim, raised only after the signature held.
_SIGNED_BUT_REFUSED = (jwt.InvalidAudienceError, jwt.InvalidIssuerError, jwt.MissingRequiredClaimError,
                       jwt.ExpiredSignatureError, jwt.ImmatureSignatureError, jwt.InvalidIssuedAtError)


def _shown(value: object) -> str:
    """A claim as a log may show it: an app id or issuer URL, cut short, whatever the sender put there."""
    return repr(value)[:80]


def _normal_url(value: object) -> str:
    return value.strip().rstrip("/").lower() if isinstance(value, str) else ""
