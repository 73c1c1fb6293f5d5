"""ZIP passwords from Azure Key Vault: one secret per protocol, kept warm, retried when the vault hiccups.

A referral must not hang on a slow vault, and a vault that refuses us (missing secret, no access)
must say so at once instead of being retried. A slow or throttling vault must not starve the
referrals either: each password is fetched when the app starts and again before its cache time
runs out, in the background, and a fetch is never cancelled by a caller that stopped waiting for
it, so its answer still fills the cache. The secret's value never leaves this module except inside
`ZipPassword`; errors and logs name the secret only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import functools
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity.aio import DefaultAzureCredential
from azure.keyvault.secrets import KeyVaultSecret
from azure.keyvault.secrets.aio import SecretClient

from bot.clock import Clock
from bot.core.metrics import Metrics
from bot.core.protocols import DataSharingProtocol
from bot.secrets.zip_passwords import ZipPassword, ZipPasswordError, check_password

logger = logging.getLogger(__name__)

DEFAULT_CACHE_TTL = dt.timedelta(minutes=10)
MAX_RETRY_AFTER_SECONDS = 30.0
#: A cached password is fetched again in the background once it is this far into its cache time.
REFRESH_AT = 0.8
#: The longest pause between two looks at what needs refreshing (shorter for short cache times).
MAX_REFRESH_CHECK_SECONDS = 30.0
_RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def create_secret_client(
    vault_url: str,
    credential: AsyncTokenCredential,
    *,
    connection_verify: str | bool = True,
    verify_challenge_resource: bool = True,
    retry_total: int | None = None,
) -> SecretClient:
    """The async SecretClient for `vault_url`.

    `connection_verify` takes a CA bundle path (tests trust their own CA); `verify_challenge_resource`
    is only switched off for a local stand-in, whose host is not a vault domain. `retry_total=None`
    keeps the SDK's own retries; `KeyVaultZipPasswordProvider` retries on top of them, so pass a small
    number when its retries should be the only ones.
    """
    options: dict[str, Any] = {
        "connection_verify": connection_verify,
        "verify_challenge_resource": verify_challenge_resource,
    }
    if retry_total is not None:
        options["retry_total"] = retry_total
    return SecretClient(vault_url=vault_url, credential=credential, **options)


def default_credential(managed_identity_client_id: str | None) -> AsyncTokenCredential:
    """DefaultAzureCredential, using the user-assigned identity named by AZURE_CLIENT_ID when given.

    The async DefaultAzureCredential has no interactive browser credential at all, so a server can
    never end up waiting for someone to sign in in a browser.
    """
    if managed_identity_client_id:
        return DefaultAzureCredential(managed_identity_client_id=managed_identity_client_id)
    return DefaultAzureCredential()


@dataclass(frozen=True)
class _Cached:
    password: ZipPassword
    fetched_at: dt.datetime


class TransientReadFailure(Exception):
    """A failure worth another attempt; `retry_after` is what the vault asked for, if anything."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class KeyVaultZipPasswordProvider:
    """Reads the latest version of the secret named in the protocol file; implements ZipPasswordProvider.

    Cached per secret name for `cache_ttl` so a rotation is picked up without a restart, yet a burst
    of referrals costs one vault call. `keep_warm` fetches the passwords before anyone needs them
    and refreshes them at `REFRESH_AT` of `cache_ttl`, so a referral normally never waits for the
    vault. There is at most one fetch per secret at a time, shared by every caller and never
    cancelled by one that stops waiting (`asyncio.shield`); only `close` ends it. `attempts` counts
    every try, the first one included; `refresh_check_seconds` is the pause of `keep_warm` between
    two looks (default: a twentieth of `cache_ttl`, at most 30 s).
    """

    def __init__(
        self,
        client: SecretClient,
        *,
        clock: Clock,
        cache_ttl: dt.timedelta = DEFAULT_CACHE_TTL,
        attempts: int = 4,
        backoff_seconds: float = 0.5,
        timeout_seconds: float = 10.0,
        refresh_check_seconds: float | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        credential: AsyncTokenCredential | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._client = client
        self._clock = clock
        self._cache_ttl = cache_ttl
        self._attempts = attempts
        self._backoff_seconds = backoff_seconds
        self._timeout_seconds = timeout_seconds
        self._refresh_check_seconds = (
            refresh_check_seconds
            if refresh_check_seconds is not None
            else min(MAX_REFRESH_CHECK_SECONDS, cache_ttl.total_seconds() / 20)
        )
        self._sleep = sleep
        self._jitter = jitter
        self._credential = credential  # the client does not close its credential, so we do
        self._metrics = metrics or Metrics.disabled()
        self._cache: dict[str, _Cached] = {}
        self._fetches: dict[str, asyncio.Task[ZipPassword]] = {}

    async def password_for(self, protocol: DataSharingProtocol) -> ZipPassword:
        """The current password for the protocol's secret, from the cache while it is fresh.

        Otherwise this waits for the one fetch of that secret (starting it if none runs). A caller
        with a time budget may stop waiting: the fetch goes on and fills the cache for the next one.
        """
        name = protocol.zip_password_secret
        cached = self._fresh(name)
        if cached is not None:
            return cached
        return await asyncio.shield(self._fetch(name))

    async def keep_warm(self, protocols: Callable[[], Iterable[DataSharingProtocol]]) -> None:
        """Fetch the passwords of `protocols()` now, then refresh each before it expires; runs until cancelled.

        `protocols` is asked again at every look, so a protocol that comes into force is warmed too.
        Failures are logged, never raised: the app must start and keep running with a vault that is
        down, and a password that could not be refreshed stays in use until its cache time ends.
        """
        if self._cache_ttl <= dt.timedelta(0):
            logger.info("Key Vault passwords are not cached (cache time 0), so none is kept warm")
            return
        while True:
            try:
                await self.refresh_due(protocols())
            except Exception:
                logger.exception("keeping the Key Vault passwords warm failed")
            await asyncio.sleep(self._refresh_check_seconds)

    async def refresh_due(self, protocols: Iterable[DataSharingProtocol]) -> None:
        """Fetch each password of `protocols` that is missing or past `REFRESH_AT` of its cache time.

        Returns when those fetches have ended; a failed one was logged by the fetch and keeps the
        old value in the cache.
        """
        due = sorted({p.zip_password_secret for p in protocols if self._refresh_due(p.zip_password_secret)})
        results = await asyncio.gather(*(asyncio.shield(self._fetch(name)) for name in due), return_exceptions=True)
        for name, result in zip(due, results, strict=True):
            if isinstance(result, Exception) and not isinstance(result, ZipPasswordError):
                logger.error("Key Vault secret refresh failed unexpectedly", exc_info=result, extra={"secret": name})

    async def close(self) -> None:
        """End the running fetches, then close the client's connections and, when we were given it, the credential."""
        fetches = list(self._fetches.values())
        for fetch in fetches:
            fetch.cancel()
        await asyncio.gather(*fetches, return_exceptions=True)
        try:
            await self._client.close()
        finally:
            if self._credential is not None:
                await self._credential.close()

    async def __aenter__(self) -> KeyVaultZipPasswordProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _fetch(self, name: str) -> asyncio.Task[ZipPassword]:
        """The running fetch of `name`, or a new one: one vault read (with its retries) for all callers."""
        fetch = self._fetches.get(name)
        if fetch is None:
            fetch = asyncio.create_task(self._fetch_into_cache(name), name=f"key-vault-read {name}")
            self._fetches[name] = fetch
            fetch.add_done_callback(functools.partial(self._forget_fetch, name))
        return fetch

    def _forget_fetch(self, name: str, fetch: asyncio.Task[ZipPassword]) -> None:
        if self._fetches.get(name) is fetch:
            del self._fetches[name]
        if not fetch.cancelled():
            fetch.exception()  # retrieved: a failure was logged by the fetch itself, even when no one waited

    async def _fetch_into_cache(self, name: str) -> ZipPassword:
        """Read the secret and cache it; on failure log what the app now lives with and raise."""
        previous = self._cache.get(name)
        try:
            password = await self._fetch_with_retries(name)
        except ZipPasswordError as error:
            now = self._clock.now()
            if previous is not None and now - previous.fetched_at < self._cache_ttl:
                logger.warning(
                    "%s; the cached password (version %s) stays in use until %s",
                    error,
                    previous.password.version,
                    (previous.fetched_at + self._cache_ttl).isoformat(timespec="seconds"),
                    extra={"secret": name},
                )
            else:
                logger.warning(
                    "%s; there is no password for it, so referrals that need it cannot be sent until it is read",
                    error,
                    extra={"secret": name},
                )
            raise
        self._cache[name] = _Cached(password, self._clock.now())
        if previous is not None and previous.password.version != password.version:
            logger.info("Key Vault secret has a new version (%s); using it from now on", password.version,
                        extra={"secret": name})
        return password

    def _refresh_due(self, name: str) -> bool:
        cached = self._cache.get(name)
        return cached is None or self._clock.now() - cached.fetched_at >= self._cache_ttl * REFRESH_AT

    def _fresh(self, name: str) -> ZipPassword | None:
        cached = self._cache.get(name)
        if cached is None or self._clock.now() - cached.fetched_at >= self._cache_ttl:
            return None
        return cached.password

    async def _fetch_with_retries(self, name: str) -> ZipPassword:
        for attempt in range(1, self._attempts + 1):
            try:
                return await self._fetch_once(name)
            except TransientReadFailure as failure:
                if attempt == self._attempts:  # logged by _fetch_into_cache, with what it means for the app
                    raise ZipPasswordError(
                        f"Key Vault secret '{name}' could not be read after {attempt} attempts ({failure.reason})",
                        transient=True,
                    ) from None
                delay = self._delay(attempt, failure.retry_after)
                logger.warning(
                    "Key Vault secret read failed (%s), attempt %d of %d; retrying in %.2f s",
                    failure.reason,
                    attempt,
                    self._attempts,
                    delay,
                    extra={"secret": name},
                )
                await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """What the vault asked for (capped), else exponential backoff with jitter between 50 and 100 %."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER_SECONDS)
        base = self._backoff_seconds * 2.0 ** (attempt - 1)
        return base * (0.5 + self._jitter() / 2)

    async def _get_secret(self, name: str) -> KeyVaultSecret:
        """One read of the vault, timed and counted (`vd.keyvault.read.*`); raises what the client raised."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout_seconds):
                secret = await self._client.get_secret(name)
        except Exception as error:
            self._metrics.key_vault_read(time.monotonic() - started, read_failure_cause(error))
            raise
        self._metrics.key_vault_read(time.monotonic() - started, None)
        return secret

    async def _fetch_once(self, name: str) -> ZipPassword:
        try:
            secret = await self._get_secret(name)
        except TimeoutError:
            raise TransientReadFailure(f"no answer within {self._timeout_seconds:g} s") from None
        except AzureError as error:
            transient = transient_read_failure(error, self._client.vault_url, self._clock.now())
            if transient is not None:
                raise transient from None
            raise _refused(name, error) from None
        return _to_password(name, secret)


def transient_read_failure(error: AzureError, vault_url: str, now: dt.datetime) -> TransientReadFailure | None:
    """Why another read may get past this one's failure (the vault's 408, 429 or 5xx with its Retry-After, no
    token from the identity endpoint, the vault out of reach); None when the vault said no, or could not be asked.

    The credential's own error (the identity endpoint's 503/429, or not listening yet) is not the vault's
    no: one that stays so shows in the log, `check` and `/readyz`.
    """
    if isinstance(error, ClientAuthenticationError):
        return None if _answered_by_the_vault(error, vault_url) else TransientReadFailure(
            f"no token for the vault: {type(error).__name__}")
    if isinstance(error, HttpResponseError) and error.status_code in _RETRIED_STATUSES:
        return TransientReadFailure(_describe(error), _retry_after(error, now))
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        return TransientReadFailure(f"vault unreachable: {type(error).__name__}")
    return None


def _refused(name: str, error: AzureError) -> ZipPasswordError:
    """What a read that is not worth repeating says: missing, disabled, access denied, refused, or unreadable."""
    return ZipPasswordError(refusal_text(name, error), transient=False)


def refusal_text(name: str, error: AzureError, *, role: str = "") -> str:
    """Why the vault would not give secret `name` (`role`: what it is for, e.g. "draft key"), in words that point
    at the fix; never the secret's value.

    A disabled secret is answered 403 like a missing role, but its fix is the secret, not the vault's
    access control: Key Vault says which in the inner error code (`SecretDisabled`).
    """
    secret = f"Key Vault secret '{name}'" + (f" ({role})" if role else "")
    if isinstance(error, ResourceNotFoundError):
        return f"{secret} does not exist"
    if _is_disabled(error):
        return (f"{secret} is disabled: enable it in the vault (the secret's current version, Enabled) or set a "
                "new version of it; access to the vault is not the problem")
    if isinstance(error, HttpResponseError) and (
            isinstance(error, ClientAuthenticationError) or error.status_code in (401, 403)):
        return f"{secret}: access denied ({_describe(error)})"
    if isinstance(error, HttpResponseError):
        return f"{secret} was refused ({_describe(error)})"
    return f"{secret} could not be read ({type(error).__name__})"


def _is_disabled(error: BaseException) -> bool:
    """Key Vault's answer for a disabled secret: 403 Forbidden with the inner error code SecretDisabled."""
    return (isinstance(error, HttpResponseError) and error.status_code == 403
            and _inner_code(error) == "SecretDisabled")


def _inner_code(error: HttpResponseError) -> str:
    """The vault's inner error code (`SecretDisabled`), or ""; read from the parsed error, never its message."""
    inner = getattr(error.error, "innererror", None)
    code = inner.get("code") if isinstance(inner, Mapping) else None
    return code if isinstance(code, str) else ""


def read_failure_cause(error: Exception) -> str:
    """A fixed word for why a read of the vault failed (metrics; the log says more)."""
    if isinstance(error, ResourceNotFoundError):
        return "not_found"
    if _is_disabled(error):
        return "disabled"
    if isinstance(error, ClientAuthenticationError):
        return "denied"
    if isinstance(error, HttpResponseError):
        status = error.status_code or 0
        return "denied" if status in (401, 403) else "throttled" if status == 429 else \
            "server_error" if status >= 500 else "refused"
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        return "unreachable"
    if isinstance(error, TimeoutError):
        return "timeout"
    return "other"


def _to_password(name: str, secret: KeyVaultSecret) -> ZipPassword:
    if secret.value is None:
        raise ZipPasswordError(f"Key Vault secret '{name}' has no value")
    version = secret.properties.version
    if not version:
        raise ZipPasswordError(f"Key Vault secret '{name}' came back without a version")
    return ZipPassword(value=check_password(secret.value, name), version=version)


def _answered_by_the_vault(error: HttpResponseError, vault_url: str) -> bool:
    """Whether the vault sent this answer: a credential's error has none, or the identity endpoint's."""
    url = getattr(getattr(error.response, "request", None), "url", None)
    return isinstance(url, str) and urlsplit(url).netloc.lower() == urlsplit(vault_url).netloc.lower()


def _describe(error: HttpResponseError) -> str:
    """Status and the vault's error code; never the response body, which we do not control."""
    parts = [type(error).__name__]
    if error.status_code is not None:
        parts.append(str(error.status_code))
    code = getattr(error.error, "code", None)
    if isinstance(code, str) and code:
        parts.append(code + (f"/{_inner_code(error)}" if _inner_code(error) else ""))
    return " ".join(parts)


def _retry_after(error: HttpResponseError, now: dt.datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), or None."""
    headers = getattr(error.response, "headers", None)  # typed loosely across azure-core's response classes
    raw = headers.get("Retry-After") if isinstance(headers, Mapping) else None
    if not isinstance(raw, str):
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return (when - now).total_seconds()
