"""The SMTP transport against a real aiosmtpd server: TLS always verified, errors classified, no data leaked."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from bot.config import Settings
from bot.delivery.mail_message import OutgoingMail
from bot.delivery.mail_transport import MailDeliveryError, MailTransport
from bot.delivery.smtp_transport import SmtpSettings, SmtpTransport, _seven_bit, is_loopback_host
from bot.wiring import build_mail_transport
from tests.support import sevenzip
from tests.support.sample_referral import (
    SENDER_ADDRESS,
    ZIP_PASSWORD,
    SampleReferral,
    protocol_with_mailbox,
    sample_referral,
)
from tests.support.smtp_server import HOST, free_port, smtp_server

AUTH = ("doorverwijzen-bot", "relay-secret-9Q4Z")


@pytest.fixture(scope="module")
def sample() -> SampleReferral:
    return sample_referral()


def _assert_reason_is_clean(error: MailDeliveryError, sample: SampleReferral) -> None:
    """Nothing the client or the server's echo could put there: no values, no addresses."""
    reason = error.reason.casefold()
    for value in [*sample.client_values(), sample.recipient, "welzijnshuis", SENDER_ADDRESS, AUTH[1]]:
        assert value.casefold() not in reason, (value, error.reason)
    assert str(error) == error.reason


def _received(data: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


async def _refusal(transport: SmtpTransport, message: OutgoingMail) -> MailDeliveryError:
    with pytest.raises(MailDeliveryError) as caught:
        await transport.send(message)
    return caught.value


def test_is_a_mail_transport() -> None:
    transport: MailTransport = SmtpTransport(SmtpSettings("smtp.example.be", 587))
    assert isinstance(transport, SmtpTransport)


async def test_starttls_delivers_once_with_the_package_intact(sample: SampleReferral, tmp_path: Path) -> None:
    with smtp_server(tls="starttls") as server:
        await SmtpTransport(server.settings()).send(sample.message)

        (mail,) = server.messages
    assert mail.tls
    assert mail.mail_from == SENDER_ADDRESS
    assert mail.rcpt_tos == (sample.recipient,) == ("welzijnshuis@sint-gillis-waas.be",)
    received = _received(mail.data)
    assert received["Message-ID"] == sample.message["Message-ID"]
    (attachment,) = received.iter_attachments()
    assert attachment.get_filename() == sample.attachment_name
    assert attachment.get_content() == sample.package
    result = sevenzip.extract(attachment.get_content(), ZIP_PASSWORD, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Meerdonk" in (tmp_path / "doorverwijzing.txt").read_text(encoding="utf-8")



async def test_a_mailbox_with_a_non_ascii_domain_gets_the_stored_mail_at_its_ascii_address(tmp_path: Path) -> None:
    idn = sample_referral(protocol=protocol_with_mailbox("welzijnshuis@sint-gillis-waäs.be", tmp_path))
    stored = OutgoingMail.from_bytes(idn.message.as_bytes())  # as the outbox worker reads the row
    with smtp_server(tls="starttls") as server:  # aiosmtpd offers no SMTPUTF8: a non-ASCII RCPT TO is refused
        await SmtpTransport(server.settings()).send(stored)

        (mail,) = server.messages
    assert mail.rcpt_tos == ("welzijnshuis@xn--sint-gillis-was-elb.be",)
    received = _received(mail.data)
    assert [address.addr_spec for address in received["To"].addresses] == list(mail.rcpt_tos)
    addresses = [line for line in mail.data.split(b"\r\n") if line.startswith((b"From:", b"To:"))]
    assert len(addresses) == 2 and not any(b"=?" in line for line in addresses), addresses  # RFC 2047 section 5

async def test_implicit_tls_delivers(sample: SampleReferral) -> None:
    with smtp_server(tls="implicit") as server:
        await SmtpTransport(server.settings()).send(sample.message)

        (mail,) = server.messages
    assert mail.tls
    assert _received(mail.data).get_body(preferencelist=("plain",)) is not None


async def test_plaintext_on_loopback_delivers(sample: SampleReferral) -> None:
    with smtp_server(tls="none") as server:
        await SmtpTransport(server.settings()).send(sample.message)

        (mail,) = server.messages
    assert not mail.tls


async def test_login_when_the_server_requires_it(sample: SampleReferral) -> None:
    with smtp_server(tls="starttls", auth=AUTH) as server:
        await SmtpTransport(server.settings()).send(sample.message)

        (mail,) = server.messages
    assert mail.login == AUTH[0]


async def test_wrong_password_is_permanent(sample: SampleReferral) -> None:
    with smtp_server(tls="starttls", auth=AUTH) as server:
        error = await _refusal(SmtpTransport(server.settings(password="wrong")), sample.message)

        assert server.messages == []
    assert error.transient is False
    assert "535" in error.reason
    assert "login" in error.reason
    _assert_reason_is_clean(error, sample)


async def test_missing_login_is_permanent(sample: SampleReferral) -> None:
    with smtp_server(tls="starttls", auth=AUTH) as server:
        error = await _refusal(SmtpTransport(server.settings(username=None, password=None)), sample.message)

    assert error.transient is False
    assert "530" in error.reason  # aiosmtpd: authentication required, at MAIL FROM


# RFC 4954: 454 is a temporary authentication failure (Postfix when its SASL backend is down);
# Exchange Online answers 454 4.7.0 or 421 4.7.x when its directory lookup fails.
@pytest.mark.parametrize(
    "reply", ["454 4.7.0 Temporary authentication failure", "421 4.7.0 Try again later, closing connection"]
)
async def test_a_temporary_reply_to_login_is_transient_and_the_next_try_logs_in(
    sample: SampleReferral, reply: str
) -> None:
    with smtp_server(tls="starttls", auth=AUTH, login_only=True) as server:
        transport = SmtpTransport(server.settings())
        server.fail_next_login(reply)
        error = await _refusal(transport, sample.message)
        await transport.send(sample.message)

        (mail,) = server.messages
    assert error.transient is True, error.reason
    assert error.reason.startswith(f"SMTP {reply[:3]} from server to login (AUTH)")
    assert mail.login == AUTH[0]
    _assert_reason_is_clean(error, sample)


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_untrusted_server_certificate_is_permanent(sample: SampleReferral, tls: str) -> None:
    with smtp_server(tls=tls) as server:  # type: ignore[arg-type]
        error = await _refusal(SmtpTransport(server.settings(ca_file=None)), sample.message)

        assert server.messages == []
    assert error.transient is False
    assert "certificate" in error.reason
    _assert_reason_is_clean(error, sample)


async def test_certificate_for_another_host_is_permanent(sample: SampleReferral) -> None:
    with smtp_server(tls="starttls", cert_names=("smtp.elsewhere.test",)) as server:
        error = await _refusal(SmtpTransport(server.settings()), sample.message)

    assert error.transient is False
    assert "certificate" in error.reason
    assert "mismatch" in error.reason  # OpenSSL's "Hostname mismatch": tells support what to fix


async def test_starttls_required_but_not_offered_is_permanent(sample: SampleReferral) -> None:
    with smtp_server(tls="none") as server:
        error = await _refusal(SmtpTransport(server.settings(tls="starttls", ca_file=server.ca_path)), sample.message)

        assert server.messages == []
    assert error.transient is False
    assert "STARTTLS" in error.reason


async def test_implicit_tls_against_a_starttls_port_is_permanent(sample: SampleReferral) -> None:
    with smtp_server(tls="starttls") as server:
        error = await _refusal(SmtpTransport(server.settings(tls="implicit")), sample.message)

    assert error.transient is False
    assert "TLS handshake" in error.reason


async def test_connection_refused_is_transient(sample: SampleReferral) -> None:
    transport = SmtpTransport(SmtpSettings(HOST, free_port(), "starttls", timeout_seconds=5))

    error = await _refusal(transport, sample.message)

    assert error.transient is True
    assert "not reachable" in error.reason
    assert "ECONNREFUSED" in error.reason


async def test_server_down_then_back(sample: SampleReferral) -> None:
    with smtp_server(tls="starttls") as server:
        transport = SmtpTransport(server.settings())
        server.stop()
        error = await _refusal(transport, sample.message)
        server.start()
        await transport.send(sample.message)

        assert len(server.messages) == 1
    assert error.transient is True


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """Accepts TCP connections and never says a word: a hung server."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_silent_server_times_out_as_transient(sample: SampleReferral, silent_port: int) -> None:
    transport = SmtpTransport(SmtpSettings(HOST, silent_port, "starttls", timeout_seconds=0.3))

    error = await _refusal(transport, sample.message)

    assert error.transient is True
    assert "in time" in error.reason


@pytest.mark.parametrize(
    ("code", "stage", "transient"),
    [
        (421, "DATA", True),
        (451, "DATA", True),
        (550, "DATA", False),
        (552, "DATA", False),
        (450, "RCPT", True),
        (550, "RCPT", False),
    ],
)
async def test_refusals_are_classified_by_reply_code(
    sample: SampleReferral, code: int, stage: str, transient: bool
) -> None:
    with smtp_server(tls="starttls") as server:
        server.fail_next(code, stage=stage)  # type: ignore[arg-type]
        error = await _refusal(SmtpTransport(server.settings()), sample.message)

        assert server.messages == []
    assert error.transient is transient
    assert f"SMTP {code} from server" in error.reason
    assert ("RCPT" if stage == "RCPT" else "DATA") in error.reason
    _assert_reason_is_clean(error, sample)


async def test_a_temporary_refusal_then_success(sample: SampleReferral) -> None:
    with smtp_server(tls="starttls") as server:
        transport = SmtpTransport(server.settings())
        server.fail_next(451, 1)
        first = await _refusal(transport, sample.message)
        await transport.send(sample.message)  # the transport does not retry; the caller does

        assert len(server.messages) == 1
    assert first.transient is True


def test_plaintext_to_a_remote_host_is_refused() -> None:
    with pytest.raises(ValueError, match="loopback"):
        SmtpTransport(SmtpSettings("smtp.sint-gillis-waas.be", 25, "none"))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("localhost.example.be", False),
        ("smtp.example.be", False),
        ("", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="together"):
        SmtpTransport(SmtpSettings("smtp.example.be", 587, username="bot"))
    with pytest.raises(ValueError, match="port"):
        SmtpTransport(SmtpSettings("smtp.example.be", 0))
    with pytest.raises(ValueError, match="CA file"):
        SmtpTransport(SmtpSettings("smtp.example.be", 587, ca_file=Path("/nonexistent/ca.pem")))
    with pytest.raises(ValueError, match="TLS mode"):
        SmtpTransport(SmtpSettings("smtp.example.be", 587, "tls"))  # type: ignore[arg-type]


def test_password_is_not_in_the_settings_repr() -> None:
    settings = SmtpSettings("smtp.example.be", 587, username="bot", password=AUTH[1])
    assert AUTH[1] not in repr(settings)


async def test_check_connects_and_logs_in_without_sending() -> None:
    with smtp_server(tls="starttls", auth=AUTH) as server:
        description = await SmtpTransport(server.settings()).check()

        assert server.messages == []
    assert f"{HOST}:{server.port}" in description
    assert "STARTTLS" in description
    assert "logged in" in description


async def test_check_reports_a_wrong_password(sample: SampleReferral) -> None:
    with smtp_server(tls="implicit", auth=AUTH) as server, pytest.raises(MailDeliveryError) as caught:
        await SmtpTransport(server.settings(password="wrong")).check()

    assert caught.value.transient is False
    assert "535" in caught.value.reason
    _assert_reason_is_clean(caught.value, sample)


async def test_check_reports_an_unreachable_server() -> None:
    with pytest.raises(MailDeliveryError) as caught:
        await SmtpTransport(SmtpSettings(HOST, free_port(), timeout_seconds=5)).check()

    assert caught.value.transient is True


def _mails(count: int) -> list[OutgoingMail]:
    return [sample_referral(f"VD-20261128-BATCH{n}").message for n in range(count)]


async def test_the_server_receives_exactly_the_queued_bytes(sample: SampleReferral) -> None:
    with smtp_server(tls="starttls") as server:
        await SmtpTransport(server.settings()).send(sample.message)

        (mail,) = server.messages
    assert mail.data == sample.message.data  # not parsed and written again on the way


async def test_send_many_uses_one_session(sample: SampleReferral) -> None:
    mails = _mails(3)
    with smtp_server(tls="starttls", auth=AUTH) as server:
        results = await SmtpTransport(server.settings()).send_many(mails)

        received = server.messages
    assert results == [None, None, None]
    assert [mail.data for mail in received] == [mail.data for mail in mails]
    assert len({mail.peer for mail in received}) == 1
    assert all(mail.tls and mail.login == AUTH[0] for mail in received)


@pytest.mark.parametrize(("code", "stage", "transient"), [(550, "RCPT", False), (451, "DATA", True)])
async def test_send_many_a_refusal_fails_only_its_own_mail(
    sample: SampleReferral, code: int, stage: str, transient: bool
) -> None:
    mails = _mails(3)
    with smtp_server(tls="starttls") as server:
        server.fail_next(code, stage=stage)  # type: ignore[arg-type]
        results = await SmtpTransport(server.settings()).send_many(mails)

        received = server.messages
    first, *others = results
    assert first is not None and first.transient is transient
    assert f"SMTP {code} from server" in first.reason
    _assert_reason_is_clean(first, sample)
    assert others == [None, None]
    assert [mail.data for mail in received] == [mails[1].data, mails[2].data]
    assert len({mail.peer for mail in received}) == 1  # the session went on after the refusal


async def test_send_many_reconnects_when_the_server_dropped_the_session(sample: SampleReferral) -> None:
    mails = _mails(3)
    with smtp_server(tls="starttls") as server:
        server.drop_next(after=1)  # the second MAIL finds the connection gone, as after an idle timeout
        results = await SmtpTransport(server.settings()).send_many(mails)

        received = server.messages
    assert results == [None, None, None]
    assert [mail.data for mail in received] == [mail.data for mail in mails]
    assert received[0].peer != received[1].peer == received[2].peer


async def test_a_dropped_fresh_session_is_not_retried(sample: SampleReferral) -> None:
    with smtp_server(tls="starttls") as server:
        server.drop_next()
        results = await SmtpTransport(server.settings()).send_many(_mails(2))

        assert len(server.messages) == 1
    assert results[0] is not None and results[0].transient and "closed the connection" in results[0].reason
    assert results[1] is None  # the next mail opened a new session


async def test_send_many_a_421_closes_the_session_and_the_next_mail_gets_a_new_one(sample: SampleReferral) -> None:
    mails = _mails(3)
    with smtp_server(tls="starttls") as server:
        transport = SmtpTransport(server.settings())
        server.fail_next(421, stage="DATA")
        results = await transport.send_many(mails)

        received = server.messages
    assert results[0] is not None and results[0].transient and "421" in results[0].reason
    assert results[1:] == [None, None]
    assert [mail.data for mail in received] == [mails[1].data, mails[2].data]


async def test_send_many_to_a_server_that_is_down_answers_for_every_mail() -> None:
    transport = SmtpTransport(SmtpSettings(HOST, free_port(), "starttls", timeout_seconds=5))

    results = await transport.send_many(_mails(3))

    assert all(result is not None and result.transient and "ECONNREFUSED" in result.reason for result in results)


async def test_send_many_a_wrong_password_fails_every_mail_permanently(sample: SampleReferral) -> None:
    with smtp_server(tls="starttls", auth=AUTH) as server:
        results = await SmtpTransport(server.settings(password="wrong")).send_many(_mails(2))

        assert server.messages == []
    assert all(result is not None and not result.transient and "535" in result.reason for result in results)


async def test_send_many_a_mail_without_recipients_fails_alone(sample: SampleReferral) -> None:
    mails = _mails(2)
    broken = OutgoingMail.from_bytes(b"From: bot@kindengezin.be\r\nSubject: x\r\n\r\nx\r\n")
    with smtp_server(tls="starttls") as server:
        results = await SmtpTransport(server.settings()).send_many([mails[0], broken, mails[1]])

        assert len(server.messages) == 2
    assert results[0] is None and results[2] is None
    assert results[1] is not None and not results[1].transient


async def test_send_many_of_nothing_connects_to_nothing() -> None:
    transport = SmtpTransport(SmtpSettings(HOST, free_port(), "starttls", timeout_seconds=5))

    assert await transport.send_many([]) == []


def _eight_bit_mail() -> OutgoingMail:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = "bot@kindengezin.be"
    message["To"] = "dpo@opgroeien.be"
    message["Message-ID"] = "<BREACH-1@kindengezin.be>"
    message["Subject"] = "Melding"
    message.set_content("Beste functionarissen, één gegevenslek.\n")  # short lines: 8bit, not quoted-printable
    return OutgoingMail.from_message(message)


async def test_an_8bit_mail_is_sent_as_it_is_to_a_server_with_8bitmime() -> None:
    mail = _eight_bit_mail()
    assert not mail.data.isascii()
    with smtp_server(tls="starttls") as server:
        await SmtpTransport(server.settings()).send(mail)

        (received,) = server.messages
    assert received.data == mail.data


def test_an_8bit_mail_is_made_7bit_for_a_server_without_8bitmime() -> None:
    data = _seven_bit(_eight_bit_mail().data)

    assert data.isascii()
    body = _received(data).get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().splitlines() == ["Beste functionarissen, één gegevenslek."]


async def test_a_failure_keeps_aiosmtplib_s_error_as_its_cause(sample: SampleReferral) -> None:
    with smtp_server(tls="starttls") as server:
        server.fail_next(550, stage="RCPT")
        error = await _refusal(SmtpTransport(server.settings()), sample.message)

    assert isinstance(error.__cause__, aiosmtplib.SMTPRecipientsRefused)  # for the log's traceback


async def test_a_session_keeps_one_connection_for_mails_sent_one_after_the_other(sample: SampleReferral) -> None:
    mails = _mails(3)
    with smtp_server(tls="starttls", auth=AUTH) as server:
        async with SmtpTransport(server.settings()).session() as session:
            for mail in mails:
                await session.send(mail)

        received = server.messages
    assert [mail.data for mail in received] == [mail.data for mail in mails]
    assert len({mail.peer for mail in received}) == 1
    assert all(mail.tls and mail.login == AUTH[0] for mail in received)


async def test_a_session_raises_a_refusal_for_its_mail_and_goes_on(sample: SampleReferral) -> None:
    mails = _mails(2)
    with smtp_server(tls="starttls") as server:
        server.fail_next(550, stage="RCPT")
        async with SmtpTransport(server.settings()).session() as session:
            with pytest.raises(MailDeliveryError) as refused:
                await session.send(mails[0])
            await session.send(mails[1])

        received = server.messages
    assert refused.value.transient is False and "SMTP 550 from server" in refused.value.reason
    assert [mail.data for mail in received] == [mails[1].data]


async def test_a_session_tries_to_connect_again_for_each_mail(sample: SampleReferral) -> None:
    """A server down for one mail may be back for the next: unlike `send_many`, nothing is given up for the rest."""
    mails = _mails(2)
    with smtp_server(tls="starttls") as server:
        server.stop()
        async with SmtpTransport(server.settings()).session() as session:
            with pytest.raises(MailDeliveryError) as down:
                await session.send(mails[0])
            server.start()
            await session.send(mails[1])

        received = server.messages
    assert down.value.transient is True
    assert [mail.data for mail in received] == [mails[1].data]


async def test_a_send_cut_off_midway_closes_the_connection_and_the_next_mail_opens_one(
    sample: SampleReferral,
) -> None:
    """Cut off while the relay has not confirmed the mail: its state is unknown, so the connection goes.

    (Cut off with `asyncio.timeout(0)` instead, the test failed now and then: on Python 3.11 `wait_for`
    inside aiosmtplib returns the reply when it arrives in the same loop turn as the cancellation.)
    """
    mails = _mails(2)
    with smtp_server(tls="starttls") as server:
        async with SmtpTransport(server.settings()).session() as session:
            await session.send(mails[0])
            server.answer_data_after(30.0)  # takes the next mail, confirms it too late
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):  # the worker's lease-bound timeout
                    await session.send(mails[1])
            server.answer_data_after(0)
            await session.send(mails[1])

        received = server.messages
    assert [mail.data for mail in received] == [mails[0].data, mails[1].data, mails[1].data], \
        "taken but never confirmed, so sent again: at least once"
    assert received[0].peer == received[1].peer != received[2].peer, "the next mail on a new connection"


async def test_a_relay_that_confirms_the_end_of_data_after_the_command_timeout_is_waited_for(
    sample: SampleReferral,
) -> None:
    """A relay that scans the message before it answers the final '.' (a before-queue content filter, a virus
    scanner opening the ZIP) may take longer than a command: RFC 5321 4.5.3.2.6 gives that reply 10 minutes,
    the greeting and the other commands far less. Given up at the command timeout (`SMTP_TIMEOUT_SECONDS`,
    here 1 s for 30 s), the mail the relay queued counts as not sent: the outbox sends it again, and again.
    The worker already bounds a send by its lease (108 s of 120 s), which is the wait to allow here."""
    with smtp_server(tls="starttls") as server:
        server.answer_data_after(2.0)  # takes the mail, says 250 two seconds later
        transport = SmtpTransport(server.settings(timeout_seconds=1))

        await transport.send(sample.message)

        assert len(server.messages) == 1


async def test_the_wait_for_the_end_of_data_ends_where_the_worker_cuts_a_send_off(
    sample: SampleReferral, tmp_path: Path
) -> None:
    """The transport the bot builds waits for that reply no longer than the worker lets a send take
    (`SEND_SHARE_OF_LEASE` of `OUTBOX_LEASE_SECONDS`): 1.8 s of a 2 s lease, for a relay that says 250 after 4 s."""
    with smtp_server(tls="starttls") as server:
        server.answer_data_after(4.0)
        settings = Settings.from_mapping({
            "BOT_DATA_DIR": str(tmp_path), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD, "MAIL_TRANSPORT": "smtp",
            "SMTP_HOST": server.host, "SMTP_PORT": str(server.port), "SMTP_CA_FILE": str(server.ca_path),
            "SMTP_TIMEOUT_SECONDS": "1", "OUTBOX_LEASE_SECONDS": "2"})
        transport = build_mail_transport(settings, [])
        started = time.monotonic()

        with pytest.raises(MailDeliveryError) as refused:
            await transport.send(sample.message)

        assert 1.5 < time.monotonic() - started < 3.5, "given up at the worker's cut-off, not at 1 s nor after 4 s"
    assert refused.value.transient and "did not answer in time" in refused.value.reason
