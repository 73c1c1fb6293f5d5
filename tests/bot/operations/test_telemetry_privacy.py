"""The privacy gate on its own: what a span, a log record and a metric attribute may carry out of the bot."""

from __future__ import annotations

import logging

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bot.core.metrics import Metrics
from bot.delivery.chat_messages import ChatSendError
from bot.delivery.failure_causes import mail_failure_cause, teams_failure_cause
from bot.delivery.mail_transport import MailDeliveryError
from bot.operations.telemetry_privacy import PrivateLogHandler, PrivateSpanExporter, scrub
from bot.secrets.keyvault_passwords import read_failure_cause

REFERENCE = "VD-20261128-K7M2QX"


def test_scrub_takes_out_references_contact_data_and_teams_ids_and_keeps_the_rest() -> None:
    text = (f"mail for {REFERENCE}-2 and DL-20261128-ABCDEF to zoelle@example.be or 0470 98 76 54, "
            "conversation a:1xYzAbCdEf, user 29:1AbCdEfGhIj, protocol OR-KG-NOW-OCMW-SGW-2026 at 2026-11-28T10:00:00")
    assert scrub(text) == ("mail for [reference] and [reference] to [redacted] or [redacted], conversation [id], "
                           "user [id], protocol OR-KG-NOW-OCMW-SGW-2026 at 2026-11-28T10:00:00")


def test_a_span_leaves_without_ids_with_its_url_cut_to_the_host_and_its_texts_scrubbed() -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(PrivateSpanExporter(exported)))
    with provider.get_tracer("t").start_as_current_span(f"send {REFERENCE}", attributes={
        "user.id": "29:1AbCdEfGhIj", "activity.conversation.id": "a:1xYzAbCdEf", "http.method": "POST",
        "http.url": "https://smba.trafficmanager.net/emea/v3/conversations/a:1xYz/activities?x=1",
        "db.statement": "UPDATE referrals SET state = :state WHERE reference = :reference",
        "note": f"about {REFERENCE}", "tags": [REFERENCE, "ok"],
    }) as span:
        span.add_event("exception", {"exception.message": f"refused {REFERENCE}"})
    [sent] = exported.get_finished_spans()
    assert sent.name == "send [reference]"
    assert dict(sent.attributes or {}) == {
        "http.method": "POST", "http.url": "https://smba.trafficmanager.net",
        "db.statement": "UPDATE referrals SET state = :state WHERE reference = :reference",
        "note": "about [reference]", "tags": ("[reference]", "ok"),
    }
    assert dict(sent.events[0].attributes or {}) == {"exception.message": "refused [reference]"}


@pytest.fixture
def exported_logs() -> tuple[logging.Logger, InMemoryLogRecordExporter]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger("bot.privacy_gate_test")
    logger.handlers[:] = [PrivateLogHandler(provider)]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, exporter


def test_a_log_record_keeps_its_facts_and_loses_who_and_what_about(
    exported_logs: tuple[logging.Logger, InMemoryLogRecordExporter],
) -> None:
    logger, exporter = exported_logs
    try:
        raise ValueError(f"cannot send {REFERENCE} to zoelle@example.be")
    except ValueError:
        logger.exception("referral %s not queued", REFERENCE, extra={
            "reference": REFERENCE, "draft_id": "dR4ft", "user_id": "aad-referrer-1", "tenant_id": "t-1",
            "protocol_id": "OR-1", "verb": "referral.send", "refused_clicks": 3})
    [record] = [data.log_record for data in exporter.get_finished_logs()]
    assert record.body == "referral [reference] not queued" and record.severity_text == "ERROR"
    attributes = dict(record.attributes or {})
    stack = attributes.pop("exception.stacktrace")
    assert attributes == {"protocol_id": "OR-1", "verb": "referral.send", "refused_clicks": 3,
                          "exception.type": "ValueError"}
    assert "cannot send [reference] to [redacted]" in str(stack) and REFERENCE not in str(stack)


def test_the_exporters_own_http_logs_and_the_access_log_are_not_exported(
    exported_logs: tuple[logging.Logger, InMemoryLogRecordExporter],
) -> None:
    logger, exporter = exported_logs
    handler = logger.handlers[0]
    for name in ("azure.core.pipeline.policies.http_logging_policy", "aiohttp.access", "urllib3.connectionpool"):
        handler.handle(logging.LogRecord(name, logging.INFO, __file__, 1, "Request URL: x", None, None))
    handler.handle(logging.LogRecord("bot.delivery.mail_delivery", logging.INFO, __file__, 1, "mail delivered",
                                     None, None))
    assert [data.log_record.body for data in exporter.get_finished_logs()] == ["mail delivered"]


def test_a_verb_nobody_declared_is_counted_as_other() -> None:
    reader = InMemoryMetricReader()
    metrics = Metrics.from_meter(MeterProvider(metric_readers=[reader]).get_meter("t"))
    metrics.turn("referral.send", 0.1)
    metrics.turn(f"referral.send {REFERENCE}", 0.1)
    metrics.turn("message", 0.1)
    data = reader.get_metrics_data()
    assert data is not None
    [metric] = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    assert sorted(dict(point.attributes or {})["verb"] for point in metric.data.data_points) == \
        ["message", "other", "referral.send"]


@pytest.mark.parametrize(("error", "cause"), [
    (MailDeliveryError("protocol OR-1 not in force on 2027-09-01", transient=False), "protocol_ended"),
    (MailDeliveryError("no answer within the lease", transient=True), "timeout"),
    (MailDeliveryError("SMTP server did not answer in time", transient=True), "timeout"),
    (MailDeliveryError("Graph: 429 — throttled", transient=True, retry_after=30), "throttled"),
    (MailDeliveryError("SMTP 451 from server", transient=True), "transient"),
    (MailDeliveryError("SMTP 550 from server", transient=False), "permanent"),
])
def test_mail_failures_become_a_fixed_cause(error: MailDeliveryError, cause: str) -> None:
    assert mail_failure_cause(error) == cause


@pytest.mark.parametrize(("error", "cause"), [
    (ChatSendError("refused", status=429), "throttled"), (ChatSendError("x", status=502), "server_error"),
    (ChatSendError("x", status=401), "unauthorized"), (ChatSendError("x", status=403), "refused"),
    (ChatSendError("connection refused"), "unreachable"), (ChatSendError("no answer within the lease"), "timeout"),
    (ChatSendError("unexpected error"), "unexpected"),
])
def test_teams_failures_become_a_fixed_cause(error: ChatSendError, cause: str) -> None:
    assert teams_failure_cause(error) == cause


@pytest.mark.parametrize(("error", "cause"), [
    (ResourceNotFoundError("gone"), "not_found"), (ServiceRequestError("down"), "unreachable"),
    (TimeoutError(), "timeout"), (RuntimeError("?"), "other"),
])
def test_key_vault_failures_become_a_fixed_cause(error: Exception, cause: str) -> None:
    assert read_failure_cause(error) == cause


@pytest.mark.parametrize(("status", "cause"), [(403, "denied"), (429, "throttled"), (503, "server_error"),
                                               (400, "refused")])
def test_key_vault_http_failures_become_a_fixed_cause(status: int, cause: str) -> None:
    error = HttpResponseError("x")
    error.status_code = status
    assert read_failure_cause(error) == cause
