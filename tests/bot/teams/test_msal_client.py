"""The connector token for an app registration with a client secret (SingleTenant, or MultiTenant).

The template deploys a user-assigned managed identity (`test_connector_token.py`); an app registration
with a client secret is the other documented set-up. Its token comes from MSAL's confidential client,
which first reads the tenant's OpenID metadata from Entra ID and then posts the credentials. Both go
through the real MSAL and `requests`, over the proxy tunnel of `entra_token_standin`.
"""

from __future__ import annotations

import pytest

from bot.config import BotIdentity
from bot.teams.connector import MsalConnectorToken
from tests.support.entra_token_standin import ENTRA_HOST, entra_token_standin

APP_ID = "00000000-0000-0000-0000-00000000b0b2"
TENANT_ID = "11111111-2222-3333-4444-555555555555"
SECRET = "app-secret-from-key-vault"  # nosec B105 - a test secret


async def test_a_single_tenant_app_gets_its_token_from_its_own_tenant_with_its_secret(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with entra_token_standin() as entra:
        entra.use(monkeypatch)
        source = MsalConnectorToken(BotIdentity(app_id=APP_ID, app_password=SECRET, app_tenant_id=TENANT_ID,
                                                app_type="SingleTenant"))
        first = await source.token()
        second = await source.token()

    assert first == second == entra.token
    assert entra.tunnels and set(entra.tunnels) == {f"{ENTRA_HOST}:443"}
    assert entra.requests == [("GET", f"/{TENANT_ID}/v2.0/.well-known/openid-configuration"),
                              ("POST", f"/{TENANT_ID}/oauth2/v2.0/token")], \
        "metadata once, one token request, then the token kept until near its expiry"
    form = entra.token_forms[0]
    assert form["grant_type"] == "client_credentials"
    assert form["client_id"] == APP_ID
    assert form["client_secret"] == SECRET
    assert form["scope"] == "https://api.botframework.com/.default"


async def test_a_multi_tenant_app_asks_the_bot_framework_tenant(monkeypatch: pytest.MonkeyPatch) -> None:
    async with entra_token_standin() as entra:
        entra.use(monkeypatch)
        source = MsalConnectorToken(BotIdentity(app_id=APP_ID, app_password=SECRET, app_type="MultiTenant"))
        assert await source.token() == entra.token

    assert entra.requests[-1] == ("POST", "/botframework.com/oauth2/v2.0/token")


async def test_a_refused_secret_is_an_error_naming_the_refusal_and_not_the_secret(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with entra_token_standin() as entra:
        entra.use(monkeypatch)
        entra.refusal = "invalid_client"  # an expired or wrong client secret
        source = MsalConnectorToken(BotIdentity(app_id=APP_ID, app_password=SECRET, app_tenant_id=TENANT_ID,
                                                app_type="SingleTenant"))
        with pytest.raises(ValueError, match="invalid_client") as refused:
            await source.token()
        entra.refusal = None  # a new secret in Key Vault: the next call fetches again, nothing cached
        assert await source.token() == entra.token

    assert SECRET not in str(refused.value)
    assert [path for method, path in entra.requests if method == "POST"] == [
        f"/{TENANT_ID}/oauth2/v2.0/token", f"/{TENANT_ID}/oauth2/v2.0/token"]
