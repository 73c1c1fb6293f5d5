"""The bot's OpenTelemetry pipeline: Application Insights when configured, a local `/metrics`, or nothing.

`telemetry_from_settings` builds it from `TelemetryConfig`; it is the only module that imports the
Azure Monitor exporter. Without `APPLICATIONINSIGHTS_CONNECTION_STRING` and without `METRICS_PORT` it
is `Telemetry.off()`: no provider, no exporter, no thread, and instruments that do nothing. With the
connection string, traces, metrics and logs go to Application Insights, authenticated with the
managed identity (the template turns local, key-based auth off), each span and log record through the
privacy gate of `bot.operations.telemetry_privacy`. The providers are explicit objects: `serve` makes them the
process's global ones once at start (`install_globally`, which the Agents SDK's own spans and the HTTP
client instrumentation use), and tests build their own with in-memory exporters.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yarl
from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry._logs import set_logger_provider
from opentelemetry.metrics import Meter, NoOpMeter
from opentelemetry.trace import NoOpTracer, Tracer

from bot.config import TelemetryConfig
from bot.core.metrics import METER_NAME, Metrics
from bot.storage.database import Database

if TYPE_CHECKING:  # the SDK itself is imported only by `build_telemetry`: a start with telemetry off skips it
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import LogRecordExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

SERVICE_NAME = "veilig-doorverwijzen"


@dataclass(frozen=True)
class Telemetry:
    """What one process records and where it goes; `off()` when nothing reads it."""

    metrics: Metrics
    meter: Meter
    tracer: Tracer
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    logger_provider: LoggerProvider | None = None
    #: The pull reader behind the local `/metrics` (None: no local view).
    local_view: InMemoryMetricReader | None = None
    export_interval: dt.timedelta = dt.timedelta(seconds=60)

    @classmethod
    def off(cls) -> Telemetry:
        return cls(metrics=Metrics.disabled(), meter=NoOpMeter(METER_NAME), tracer=NoOpTracer())

    @property
    def records_metrics(self) -> bool:
        return self.meter_provider is not None

    def instrument_database(self, db: Database) -> None:
        """A span per statement on `db`'s engine (the SQL text, never its values), when spans are exported."""
        if self.tracer_provider is None or self.meter_provider is None:
            return
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

        usage = self.meter_provider.get_meter("opentelemetry.instrumentation.sqlalchemy").create_up_down_counter(
            "db.client.connections.usage", unit="connections", description="connections by state")
        EngineTracer(  # type: ignore[no-untyped-call]
            self.tracer_provider.get_tracer("opentelemetry.instrumentation.sqlalchemy"),
                     db.engine.sync_engine, usage)

    def log_handler(self, level: int | str = logging.NOTSET) -> logging.Handler | None:
        """The handler that exports log records (through the privacy gate); None when logs are not exported."""
        if self.logger_provider is None:
            return None
        from bot.operations.telemetry_privacy import PrivateLogHandler

        return PrivateLogHandler(self.logger_provider, logging.getLevelName(level) if isinstance(level, str)
                                 else level)

    def install_globally(self, log_level: int | str = logging.NOTSET) -> None:
        """Make these providers the process's own, once at start (`serve`); nothing happens when off.

        Then the Agents SDK's spans and every aiohttp client session (the connector, Key Vault, Graph)
        are traced too, and the root logger's records are exported.
        """
        if self.tracer_provider is not None:
            trace_api.set_tracer_provider(self.tracer_provider)
            from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

            AioHttpClientInstrumentor().instrument(tracer_provider=self.tracer_provider,
                                                   meter_provider=self.meter_provider, url_filter=host_only)
        if self.meter_provider is not None:
            metrics_api.set_meter_provider(self.meter_provider)
        if self.logger_provider is not None:
            set_logger_provider(self.logger_provider)
            handler = self.log_handler(log_level)
            if handler is not None:
                logging.getLogger().addHandler(handler)

    def shutdown(self) -> None:
        """Send what is still buffered and stop the exporters' threads."""
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            if provider is not None:
                provider.shutdown()


def host_only(url: yarl.URL) -> str:
    """An HTTP client span's URL: scheme and host, never the path (conversation ids, user ids, secrets)."""
    parts = urllib.parse.urlsplit(str(url))
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


def build_telemetry(
    config: TelemetryConfig,
    *,
    span_exporter: SpanExporter | None = None,
    metric_readers: Sequence[MetricReader] = (),
    log_exporter: LogRecordExporter | None = None,
    batch: bool = True,
) -> Telemetry:
    """The pipeline from these exporters (`batch=False`: each span and log record exported at once, for tests).

    A local `/metrics` view is added when `config.metrics_port` is set. Spans and log records pass
    the privacy gate before any exporter sees them. The OpenTelemetry SDK (about 50 ms of a start) is
    imported here, so a bot with telemetry off (`Telemetry.off()`) never loads it.
    """
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    from bot.operations.telemetry_privacy import PrivateSpanExporter

    resource = Resource.create({"service.name": SERVICE_NAME, "service.instance.id": socket.gethostname()})
    local_view = InMemoryMetricReader() if config.metrics_port is not None else None
    readers = [*metric_readers, *([local_view] if local_view is not None else [])]
    meter_provider = MeterProvider(metric_readers=readers, resource=resource, shutdown_on_exit=False) \
        if readers else None
    tracer_provider = None
    if span_exporter is not None:
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        private = PrivateSpanExporter(span_exporter)
        tracer_provider.add_span_processor(BatchSpanProcessor(private) if batch else SimpleSpanProcessor(private))
    logger_provider = None
    if log_exporter is not None:
        logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(log_exporter) if batch else SimpleLogRecordProcessor(log_exporter))
    meter = meter_provider.get_meter(METER_NAME) if meter_provider is not None else NoOpMeter(METER_NAME)
    tracer = tracer_provider.get_tracer(METER_NAME) if tracer_provider is not None else NoOpTracer()
    return Telemetry(metrics=Metrics.from_meter(meter), meter=meter, tracer=tracer,
                     tracer_provider=tracer_provider, meter_provider=meter_provider,
                     logger_provider=logger_provider, local_view=local_view, export_interval=config.export_interval)


def telemetry_from_settings(config: TelemetryConfig, *, credential: Any = None) -> Telemetry:
    """Application Insights when the connection string is set (and the local view when asked), else off.

    `credential` replaces the managed identity (tests with a token stand-in).
    """
    if config.connection_string is None:
        return build_telemetry(config) if config.metrics_port is not None else Telemetry.off()
    from azure.monitor.opentelemetry.exporter import (
        AzureMonitorLogExporter,
        AzureMonitorMetricExporter,
        AzureMonitorTraceExporter,
    )
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential(managed_identity_client_id=config.managed_identity_client_id) \
            if config.managed_identity_client_id else DefaultAzureCredential()
    # No offline store: telemetry is best effort (the exporter retries each batch), and nothing of the bot
    # is kept on an instance's disk, which App Service may replace at any time anyway.
    options: dict[str, Any] = {"connection_string": config.connection_string, "credential": credential,
                               "disable_offline_storage": True}
    interval_ms = config.export_interval.total_seconds() * 1000
    return build_telemetry(
        config,
        span_exporter=AzureMonitorTraceExporter(**options),
        metric_readers=[PeriodicExportingMetricReader(AzureMonitorMetricExporter(**options),
                                                      export_interval_millis=interval_ms)],
        log_exporter=AzureMonitorLogExporter(**options),
    )
