"""MSAL for the bot's own app registration, over HTTP that gives up.

MSAL is synchronous and runs in a thread of the event loop's default executor, the few threads that
also resolve every host name the bot connects to. The Agents SDK's `MsalAuth` hands MSAL a
`requests.Session` without a timeout: an identity endpoint that took the request and never answered
kept its thread for ever. Here every request gives up after `HTTP_TIMEOUT`, and a GET that timed out
or could not connect is sent once more (a request lost in flight; MSAL retries nothing for a
managed identity). The MSAL client is built in the calling thread, as building a confidential client
asks the identity platform for its metadata. Imported only with authentication on: MSAL and
`requests` are about 0.1 s of a start.
"""

from __future__ import annotations

import threading
from typing import Any

import msal
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from bot.config import BotIdentity

#: Seconds to connect, and to wait for an answer, for each request to the identity platform.
HTTP_TIMEOUT = (5.0, 10.0)
#: The Bot Framework's authority for a multi-tenant app registration (no MicrosoftAppTenantId).
MULTI_TENANT_AUTHORITY = "https://login.microsoftonline.com/botframework.com"


class TimedSession(requests.Session):
    """A `requests.Session` whose requests give up after `HTTP_TIMEOUT` unless the caller sets a timeout."""

    def __init__(self) -> None:
        super().__init__()
        adapter = HTTPAdapter(max_retries=Retry(total=1, status=0, redirect=0, allowed_methods=frozenset({"GET"})))
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = HTTP_TIMEOUT
        return super().request(method, url, *args, **kwargs)


class AppRegistrationToken:
    """`fetch()`: an access token of the app registration (client secret or user-assigned managed identity).

    Blocking: call it in a thread. MSAL keeps the token it fetched and hands it out again until near
    its expiry; a fetch that fails raises (`requests`' errors are `OSError`s, a refusal `ValueError`).
    """

    def __init__(self, identity: BotIdentity, *, resource: str, scope: str) -> None:
        self._identity = identity
        self._resource = resource
        self._scope = scope
        self._client: Any = None
        self._lock = threading.Lock()  # one MSAL call at a time, even from a thread left behind by a cancelled wait

    def fetch(self) -> str:
        with self._lock:
            if self._client is None:
                self._client = self._new_client()
            if self._identity.app_type == "UserAssignedMSI":
                result = self._client.acquire_token_for_client(resource=self._resource)
            else:
                result = self._client.acquire_token_for_client(scopes=[self._scope])
        token = result.get("access_token") if isinstance(result, dict) else None
        if not isinstance(token, str) or not token:
            error = result.get("error") if isinstance(result, dict) else None
            raise ValueError(f"no token for the app registration: {error or 'no answer'}")
        return token

    def _new_client(self) -> Any:
        session = TimedSession()
        if self._identity.app_type == "UserAssignedMSI":
            return msal.ManagedIdentityClient(msal.UserAssignedManagedIdentity(client_id=self._identity.app_id),
                                              http_client=session)
        tenant = self._identity.app_tenant_id
        return msal.ConfidentialClientApplication(
            self._identity.app_id,
            authority=f"https://login.microsoftonline.com/{tenant}" if tenant else MULTI_TENANT_AUTHORITY,
            client_credential=self._identity.app_password or None,
            http_client=session,
        )
