"""The Graph sendMail transport against a local HTTPS stand-in: shape, token, status mapping, no leaks."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email.utils
import ssl
from collections.abc import AsyncIterator
from email.policy import SMTP
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web
from azure.core.credentials import AccessToken
from azure.identity import CredentialUnavailableError
from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

from bot.delivery.graph_transport import GRAPH_SCOPE, GraphMailTransport
from bot.delivery.mail_message import OutgoingMail
from bot.delivery.mail_transport import MailDeliveryError, MailTransport
from bot.evidence.breach_report import build_breach_mail
from tests.bot.evidence.test_breach_report import PROTOCOL, REPORT
from tests.support import keyvault_standin, sevenzip
from tests.support.graph_standin import GraphStandIn, StaticTokenCredential, graph_standin, managed_identity_standin
from tests.support.sample_referral import ZIP_PASSWORD, SampleReferral, sample_referral
from tests.support.smtp_server import free_port


@pytest.fixture(scope="module")
def sample() -> SampleReferral:
    return sample_referral()


@pytest.fixture
async def graph() -> AsyncIterator[GraphStandIn]:
    async with graph_standin() as standin:
        yield standin


@pytest.fixture
async def credential(graph: GraphStandIn) -> AsyncIterator[StaticTokenCredential]:
    async with StaticTokenCredential(graph.token) as static:
        yield static


@pytest.fixture
async def transport(graph: GraphStandIn, credential: StaticTokenCredential) -> AsyncIterator[GraphMailTransport]:
    graph_transport = GraphMailTransport(
        credential, sender=graph.sender, base_url=graph.base_url, ca_file=graph.ca_path, timeout_seconds=5
    )
    try:
        yield graph_transport
    finally:
        await graph_transport.close()


def _assert_reason_is_clean(error: MailDeliveryError, sample: SampleReferral) -> None:
    reason = error.reason.casefold()
    for value in [*sample.client_values(), sample.recipient, "welzijnshuis", "could not be processed"]:
        assert value.casefold() not in reason, (value, error.reason)


async def _refusal(transport: GraphMailTransport, sample: SampleReferral) -> MailDeliveryError:
    with pytest.raises(MailDeliveryError) as caught:
        await transport.send(sample.message)
    return caught.value


def test_is_a_mail_transport(credential: StaticTokenCredential) -> None:
    transport: MailTransport = GraphMailTransport(credential, sender="doorverwijzen@kindengezin.be")
    assert isinstance(transport, GraphMailTransport)


async def test_202_and_graph_received_the_mail(
    transport: GraphMailTransport,
    graph: GraphStandIn,
    credential: StaticTokenCredential,
    sample: SampleReferral,
    tmp_path: Path,
) -> None:
    await transport.send(sample.message)

    assert graph.problems == []
    (request,) = graph.requests
    assert request.method == "POST"
    assert request.path == f"/v1.0/users/{graph.sender}/sendMail"
    assert request.authorization == f"Bearer {graph.token}"
    assert credential.scopes == [(GRAPH_SCOPE,)]
    assert request.body["saveToSentItems"] is True
    (sent,) = graph.sent
    assert sent["toRecipients"] == [{"emailAddress": {"address": "welzijnshuis@sint-gillis-waas.be"}}]
    assert sent["subject"] == sample.message["Subject"]
    assert sent["subject"].startswith("Doorverwijzing VD-20261128-K7M2QX – ")
    assert sent["internetMessageId"] == "<VD-20261128-K7M2QX@kindengezin.be>"
    assert sent["body"]["contentType"] == "Text"
    assert "7-Zip" in sent["body"]["content"]
    (attachment,) = sent["attachments"]
    assert attachment["@odata.type"] == "#microsoft.graph.fileAttachment"
    assert attachment["name"] == sample.attachment_name == "VD-20261128-K7M2QX.zip"
    assert attachment["contentType"] == "application/zip"
    package = base64.b64decode(attachment["contentBytes"], validate=True)
    assert package == sample.package
    result = sevenzip.extract(package, ZIP_PASSWORD, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Meerdonk" in (tmp_path / "doorverwijzing.txt").read_text(encoding="utf-8")


async def test_the_session_is_kept_and_closed(transport: GraphMailTransport, graph: GraphStandIn) -> None:
    sample = sample_referral("VD-20261128-AAAA22")
    await transport.send(sample.message)
    await transport.send(sample.message)
    await transport.close()
    await transport.send(sample.message)  # a new session after close: the transport stays usable

    assert len(graph.sent) == 3


async def test_429_is_transient_with_the_retry_after(
    transport: GraphMailTransport, graph: GraphStandIn, sample: SampleReferral
) -> None:
    graph.answer_next(429, retry_after="7")

    error = await _refusal(transport, sample)

    assert error.transient is True
    assert error.retry_after == 7
    assert "429" in error.reason
    assert len(graph.requests) == 1  # no retry inside the transport: the outbox worker decides
    _assert_reason_is_clean(error, sample)
    await transport.send(sample.message)
    assert len(graph.sent) == 1


async def test_retry_after_as_an_http_date(
    transport: GraphMailTransport, graph: GraphStandIn, sample: SampleReferral
) -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
    graph.answer_next(503, retry_after=email.utils.format_datetime(when, usegmt=True))

    error = await _refusal(transport, sample)

    assert error.transient is True
    assert error.retry_after is not None
    assert 100 < error.retry_after <= 120


@pytest.mark.parametrize(("status", "retry_after"), [(503, "30"), (504, None), (500, None), (502, None)])
async def test_server_trouble_is_transient(
    transport: GraphMailTransport, graph: GraphStandIn, sample: SampleReferral, status: int, retry_after: str | None
) -> None:
    graph.answer_next(status, retry_after=retry_after)

    error = await _refusal(transport, sample)

    assert error.transient is True
    assert error.retry_after == (float(retry_after) if retry_after else None)
    assert str(status) in error.reason
    _assert_reason_is_clean(error, sample)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, "ErrorInvalidRecipients"),
        (401, "app registration or managed identity"),
        (403, "check the Mail.Send permission and the application access policy for the sending mailbox"),
        (404, "sending mailbox does not exist"),
    ],
)
async def test_refusals_are_permanent_with_a_clear_reason(
    transport: GraphMailTransport, graph: GraphStandIn, sample: SampleReferral, status: int, expected: str
) -> None:
    graph.answer_next(status)

    error = await _refusal(transport, sample)

    assert error.transient is False
    assert error.reason.startswith(f"Graph refused the mail: {status}")
    assert expected in error.reason
    _assert_reason_is_clean(error, sample)


async def test_a_wrong_token_is_refused_by_graph(graph: GraphStandIn, sample: SampleReferral) -> None:
    async with StaticTokenCredential("someone-elses-token") as wrong:
        transport = GraphMailTransport(wrong, sender=graph.sender, base_url=graph.base_url, ca_file=graph.ca_path)
        try:
            error = await _refusal(transport, sample)
        finally:
            await transport.close()

    assert error.transient is False
    assert "401 InvalidAuthenticationToken" in error.reason
    assert graph.sent == []


async def test_an_unknown_mailbox_is_permanent(
    graph: GraphStandIn, credential: StaticTokenCredential, sample: SampleReferral
) -> None:
    transport = GraphMailTransport(
        credential, sender="niemand@kindengezin.be", base_url=graph.base_url, ca_file=graph.ca_path
    )
    try:
        error = await _refusal(transport, sample)
    finally:
        await transport.close()

    assert error.transient is False
    assert "404 ErrorInvalidUser" in error.reason


async def test_an_untrusted_certificate_is_permanent(
    graph: GraphStandIn, credential: StaticTokenCredential, sample: SampleReferral
) -> None:
    transport = GraphMailTransport(credential, sender=graph.sender, base_url=graph.base_url)  # no test CA
    try:
        error = await _refusal(transport, sample)
    finally:
        await transport.close()

    assert error.transient is False
    assert "certificate" in error.reason
    assert graph.requests == []


async def test_an_unreachable_graph_is_transient(credential: StaticTokenCredential, sample: SampleReferral) -> None:
    transport = GraphMailTransport(
        credential, sender="doorverwijzen@kindengezin.be", base_url=f"https://127.0.0.1:{free_port()}"
    )
    try:
        error = await _refusal(transport, sample)
    finally:
        await transport.close()

    assert error.transient is True
    assert "not reachable" in error.reason


class _UnavailableCredential(StaticTokenCredential):
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        raise CredentialUnavailableError("no managed identity endpoint is configured")


class _HangingCredential(StaticTokenCredential):
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        await asyncio.sleep(60)  # IMDS that accepts TCP and never answers
        raise AssertionError("unreachable")


async def test_no_credential_is_transient_and_named(graph: GraphStandIn, sample: SampleReferral) -> None:
    """Retried up to the horizon like any token failure; `python -m bot check` and the log name it."""
    async with _UnavailableCredential() as unavailable:
        transport = GraphMailTransport(unavailable, sender=graph.sender, base_url=graph.base_url, ca_file=graph.ca_path)
        error = await _refusal(transport, sample)

    assert error.transient is True
    assert error.reason == "no Graph token (CredentialUnavailableError)"
    assert graph.requests == []


@pytest.mark.parametrize("listening", [True, False], ids=["503", "not listening"])
async def test_an_identity_endpoint_outage_is_transient(
    graph: GraphStandIn, sample: SampleReferral, monkeypatch: pytest.MonkeyPatch, listening: bool
) -> None:
    """App Service's identity endpoint failing (a platform hiccup, a new instance's first seconds):
    azure-identity raises ClientAuthenticationError, but Graph never refused the mail."""

    async def unavailable(token: str) -> None:
        raise web.HTTPServiceUnavailable()

    async with keyvault_standin.managed_identity_standin(token=graph.token, on_issue=unavailable) as identity:
        endpoint = identity.endpoint if listening else f"http://127.0.0.1:{free_port()}/msi/token"
        keyvault_standin.use_managed_identity(monkeypatch, endpoint, identity.header)
        async with DefaultAzureCredential() as default:  # as bot/wiring.py builds it
            transport = GraphMailTransport(default, sender=graph.sender, base_url=graph.base_url, ca_file=graph.ca_path)
            try:
                error = await _refusal(transport, sample)
            finally:
                await transport.close()

    assert len(identity.requests) == (4 if listening else 0)  # azure-identity's own retries
    assert graph.requests == []
    assert error.transient is True, error.reason
    assert error.reason == "no Graph token (ClientAuthenticationError)"  # not its message: endpoints, ids


async def test_a_hanging_identity_endpoint_is_bounded(graph: GraphStandIn, sample: SampleReferral) -> None:
    async with _HangingCredential() as hanging:
        transport = GraphMailTransport(
            hanging, sender=graph.sender, base_url=graph.base_url, ca_file=graph.ca_path, timeout_seconds=0.2
        )
        error = await _refusal(transport, sample)

    assert error.transient is True
    assert "in time" in error.reason


async def test_check_looks_up_the_mailbox_without_sending(transport: GraphMailTransport, graph: GraphStandIn) -> None:
    description = await transport.check()

    assert graph.sender in description
    (request,) = graph.requests
    assert (request.method, request.path) == ("GET", f"/v1.0/users/{graph.sender}")
    assert request.authorization == f"Bearer {graph.token}"
    assert graph.sent == []


@pytest.mark.parametrize(("status", "transient"), [(401, False), (403, False), (404, False), (503, True)])
async def test_check_failures(transport: GraphMailTransport, graph: GraphStandIn, status: int, transient: bool) -> None:
    graph.answer_next(status)

    with pytest.raises(MailDeliveryError) as caught:
        await transport.check()

    assert caught.value.transient is transient
    assert caught.value.reason.startswith(f"Graph refused the mailbox lookup: {status}")


def test_plain_http_is_refused(credential: StaticTokenCredential) -> None:
    with pytest.raises(ValueError, match="https"):
        GraphMailTransport(credential, sender="doorverwijzen@kindengezin.be", base_url="http://127.0.0.1:8080")


@pytest.mark.parametrize("sender", ["", "Bot <bot@kindengezin.be>", "bot@kindengezin.be/../x", "no-domain"])
def test_the_sender_must_be_an_address_or_object_id(credential: StaticTokenCredential, sender: str) -> None:
    with pytest.raises(ValueError, match="sender"):
        GraphMailTransport(credential, sender=sender)


def test_an_object_id_is_a_valid_sender(credential: StaticTokenCredential) -> None:
    GraphMailTransport(credential, sender="6b1c9a0e-2f7d-4c5e-9a3b-0d8e7f6a5b4c")


async def test_a_session_factory_can_replace_the_default(
    graph: GraphStandIn, credential: StaticTokenCredential, sample: SampleReferral
) -> None:
    made: list[aiohttp.ClientSession] = []

    def factory() -> aiohttp.ClientSession:
        context = ssl.create_default_context(cafile=str(graph.ca_path))
        made.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)))
        return made[-1]

    transport = GraphMailTransport(credential, sender=graph.sender, base_url=graph.base_url, session_factory=factory)
    try:
        await transport.send(sample.message)
    finally:
        await transport.close()

    assert len(made) == 1
    assert made[0].closed
    assert len(graph.sent) == 1


async def test_a_real_managed_identity_credential(
    graph: GraphStandIn, sample: SampleReferral, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with managed_identity_standin(token=graph.token) as identity:
        monkeypatch.setenv("IDENTITY_ENDPOINT", identity.endpoint)
        monkeypatch.setenv("IDENTITY_HEADER", identity.header)
        async with ManagedIdentityCredential() as managed:
            transport = GraphMailTransport(managed, sender=graph.sender, base_url=graph.base_url, ca_file=graph.ca_path)
            try:
                await transport.send(sample.message)
            finally:
                await transport.close()

    assert identity.resources == ["https://graph.microsoft.com"]
    assert len(graph.sent) == 1


async def test_a_mail_without_recipients_is_not_sent(transport: GraphMailTransport, graph: GraphStandIn) -> None:
    mail = OutgoingMail.from_bytes(b"From: doorverwijzen@kindengezin.be\r\nSubject: x\r\n\r\nx\r\n")

    with pytest.raises(MailDeliveryError) as caught:
        await transport.send(mail)

    assert caught.value.transient is False
    assert graph.requests == []


async def test_the_json_request_carries_the_stored_bytes_subject_and_attachment(
    transport: GraphMailTransport, graph: GraphStandIn, sample: SampleReferral
) -> None:
    await transport.send(sample.message)

    (request,) = graph.requests
    message = request.body["message"]
    assert request.body["saveToSentItems"] is True
    assert message["internetMessageId"] == sample.message.message_id
    assert [a["contentBytes"] for a in message["attachments"]] == [base64.b64encode(sample.package).decode()]


async def test_a_breach_report_keeps_its_high_importance_through_graph(
    transport: GraphMailTransport, graph: GraphStandIn
) -> None:
    """The breach report to both DPOs is marked `Importance: high` (Outlook's red '!', its own filters and
    rules); over SMTP Exchange keeps it, but Graph's JSON form carries only what `graph_message` copies:
    sent through Graph the DPOs get a notification with a 72-hour deadline at normal importance."""
    message = build_breach_mail(REPORT, PROTOCOL, sender=graph.sender, timezone=ZoneInfo("Europe/Brussels"))
    assert message["Importance"] == "high"

    await transport.send(OutgoingMail.from_bytes(message.as_bytes(policy=SMTP)))

    [sent] = graph.sent
    assert sent.get("importance") == "high", f"the DPOs' mail is of normal importance: {sorted(sent)}"
