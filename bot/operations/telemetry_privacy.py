"""The gate every exported span and log record passes: no client data, user or reference leaves the bot.

The bot's own telemetry names none (metric attributes come from fixed lists, `bot.core.metrics`), but
libraries add theirs: the Agents SDK puts conversation, activity and user ids on its spans, an HTTP
client span carries the URL with ids in its path, and the console log's `extra` fields hold
references and user ids on purpose (the operator reading the container log needs them; Application
Insights does not). So a span leaves as a copy without identifying attributes, a URL keeps only its
scheme and host, a log record keeps only the fields in `EXPORTED_LOG_FIELDS`, and every text (span
name, attribute, event, log message, stack trace) is redacted: e-mail addresses, phone numbers,
download tokens (`bot.logging_setup.redact`), references and Teams ids.
"""

from __future__ import annotations

import logging
import re
import time
import traceback
import urllib.parse
from collections.abc import Sequence

from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status
from opentelemetry.util.types import Attributes, AttributeValue

from bot.logging_setup import extra_fields, redact

REDACTED_REFERENCE = "[reference]"
REDACTED_ID = "[id]"
#: Referral references (with a correction's version) and breach report ids.
_REFERENCE = re.compile(r"\b(?:VD|DL)-[0-9]{8}-[0-9A-Z]{6}(?:-[0-9]{1,2})?\b")
#: Teams user and conversation ids (`29:…`, `8:orgid:…`, `a:…`, `19:…@thread.tacv2`).
_TEAMS_ID = re.compile(r"\b(?:29|28|8|a|19):[\w.@;=:-]{6,}")
#: Span attributes that identify a person or a conversation: dropped whatever their value.
DROPPED_SPAN_ATTRIBUTES = frozenset({
    "user.id", "enduser.id", "user.name", "user.email", "agentic.user_id", "agentic.instance_id",
    "activity.conversation.id", "activity.id", "activity.attachment.id", "view.id", "db.user",
    "http.target", "url.path", "url.query", "http.request.header.authorization",
})
#: Span attributes holding a whole URL: only the scheme and host are kept.
URL_SPAN_ATTRIBUTES = frozenset({"url.full", "http.url", "url.original", "service_url"})
#: The console log's `extra` fields that may go to Application Insights: facts, never whom or what about.
EXPORTED_LOG_FIELDS = frozenset({
    "protocol_id", "verb", "fields", "reason", "activity_type", "secret", "error", "conversation_type",
    "refused_clicks", "tables", "rows", "from_revision", "expires_in_s", "action",
})
#: Loggers that are not exported: the exporters' own HTTP calls (exporting those would feed itself),
#: and the access log (every request is a span already).
UNEXPORTED_LOGGERS = ("azure.core.pipeline", "azure.monitor", "opentelemetry", "urllib3", "aiohttp.access")
_SEVERITY = {logging.DEBUG: SeverityNumber.DEBUG, logging.INFO: SeverityNumber.INFO,
             logging.WARNING: SeverityNumber.WARN, logging.ERROR: SeverityNumber.ERROR,
             logging.CRITICAL: SeverityNumber.FATAL}


def scrub(text: str) -> str:
    """`text` without e-mail addresses, phone numbers, download tokens, references or Teams ids."""
    return _TEAMS_ID.sub(REDACTED_ID, _REFERENCE.sub(REDACTED_REFERENCE, redact(text)))


def scrub_attributes(attributes: Attributes) -> dict[str, AttributeValue]:
    """The attributes that may leave, their texts scrubbed and their URLs cut to scheme and host."""
    kept: dict[str, AttributeValue] = {}
    for key, value in (attributes or {}).items():
        if key in DROPPED_SPAN_ATTRIBUTES:
            continue
        if key in URL_SPAN_ATTRIBUTES and isinstance(value, str):
            parts = urllib.parse.urlsplit(value)
            kept[key] = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts.netloc else REDACTED_ID
        elif isinstance(value, str):
            kept[key] = scrub(value)
        elif isinstance(value, Sequence) and not isinstance(value, bytes | str):
            kept[key] = tuple(scrub(item) if isinstance(item, str) else item for item in value)
        else:
            kept[key] = value
    return kept


def private_span(span: ReadableSpan) -> ReadableSpan:
    """A copy of `span` that holds nothing about anyone."""
    status = span.status
    return ReadableSpan(
        name=scrub(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=scrub_attributes(span.attributes),
        events=[Event(event.name, scrub_attributes(event.attributes), event.timestamp) for event in span.events],
        links=(),
        kind=span.kind,
        status=Status(status.status_code, scrub(status.description) if status.description else None),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class PrivateSpanExporter(SpanExporter):
    """Hands `inner` only private copies of the spans (`private_span`)."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([private_span(span) for span in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class PrivateLogHandler(logging.Handler):
    """Sends log records to an OpenTelemetry logger provider: message scrubbed, only facts as attributes.

    It builds the exported record itself instead of changing the `logging` record, which the
    console handler shows in full.
    """

    def __init__(self, provider: LoggerProvider, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self._provider = provider

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(UNEXPORTED_LOGGERS):
            return
        try:
            attributes: dict[str, AttributeValue] = {}
            for name, value in extra_fields(record).items():
                if name in EXPORTED_LOG_FIELDS:
                    attributes[name] = value if isinstance(value, bool | int | float) else scrub(str(value))
            if record.exc_info and record.exc_info[0] is not None:
                attributes["exception.type"] = record.exc_info[0].__name__
                attributes["exception.stacktrace"] = scrub("".join(traceback.format_exception(*record.exc_info)))
            self._provider.get_logger(record.name).emit(
                timestamp=int(record.created * 1e9),
                observed_timestamp=time.time_ns(),
                severity_number=_SEVERITY.get(record.levelno, SeverityNumber.UNSPECIFIED),
                severity_text=record.levelname,
                body=scrub(record.getMessage()),
                attributes=attributes,
            )
        except Exception:  # a log line must never break the code that logged
            self.handleError(record)
