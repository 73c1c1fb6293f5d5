"""Telemetry's settings, its cost when off, and the real Azure Monitor exporter against an ingestion stand-in.

The exporter posts to `<IngestionEndpoint>/v2.1/track` with a token of the managed identity (the
template disables key-based ingestion), here from App Service's identity endpoint stand-in, through
the same `DefaultAzureCredential` the bot builds in production.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.metrics import NoOpCounter
from opentelemetry.trace import SpanKind

from bot.config import ConfigError, Settings
from bot.operations.telemetry import telemetry_from_settings
from tests.support.bot_server import BotDriver
from tests.support.keyvault_standin import managed_identity_standin
from tests.support.local_tls import local_tls

INSTRUMENTATION_KEY = "00000000-0000-4000-8000-0000000000a1"
CLIENT_ID = "00000000-0000-4000-8000-0000000000c1"
REFERENCE = "VD-20261128-K7M2QX"
#: Read by the Azure Monitor exporter itself (infra/modules/webapp.bicep sets them).
EXPORTER_SETTINGS = ("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED",
                     "APPLICATIONINSIGHTS_SDKSTATS_DISABLED")


def test_without_a_connection_string_or_a_metrics_port_telemetry_is_off_and_starts_nothing() -> None:
    threads = threading.active_count()
    telemetry = telemetry_from_settings(Settings.from_mapping({}).telemetry)
    assert telemetry.tracer_provider is None and telemetry.meter_provider is None and telemetry.logger_provider is None
    assert not telemetry.records_metrics and telemetry.local_view is None and telemetry.log_handler() is None
    assert isinstance(telemetry.metrics.referrals_started, NoOpCounter)
    telemetry.install_globally()  # nothing to install: the global providers stay the API's defaults
    telemetry.metrics.referral_started("OR-1")
    assert threading.active_count() == threads


def test_the_settings_read_the_connection_string_and_the_local_view() -> None:
    config = Settings.from_mapping({
        "APPLICATIONINSIGHTS_CONNECTION_STRING": f"InstrumentationKey={INSTRUMENTATION_KEY};"
                                                 "IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/",
        "AZURE_CLIENT_ID": CLIENT_ID, "METRICS_PORT": "9464", "TELEMETRY_EXPORT_SECONDS": "30",
    }).telemetry
    assert config.connection_string is not None and config.managed_identity_client_id == CLIENT_ID
    assert (config.metrics_host, config.metrics_port, config.export_interval.total_seconds()) == ("127.0.0.1", 9464, 30)
    assert "InstrumentationKey" not in repr(config)
    assert Settings.from_mapping({}).telemetry.metrics_port is None, "off unless asked for (make run asks)"


@pytest.mark.parametrize(("env", "named"), [
    ({"METRICS_HOST": "0.0.0.0", "METRICS_PORT": "9464"}, "METRICS_HOST"),  # noqa: S104  # nosec B104: refused
    ({"METRICS_HOST": "10.0.0.4"}, "METRICS_HOST"),
    ({"METRICS_PORT": "http"}, "METRICS_PORT"),
    ({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=abc"}, "APPLICATIONINSIGHTS_CONNECTION_STRING"),
    ({"APPLICATIONINSIGHTS_CONNECTION_STRING": f"InstrumentationKey={INSTRUMENTATION_KEY};"
                                               "IngestionEndpoint=http://in.example/"},
     "APPLICATIONINSIGHTS_CONNECTION_STRING"),
    ({"TELEMETRY_EXPORT_SECONDS": "1"}, "TELEMETRY_EXPORT_SECONDS"),
])
def test_a_bad_telemetry_setting_is_refused_by_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_mapping(env)


@dataclass
class Ingestion:
    """Application Insights' ingestion endpoint: what was posted, with which Authorization header."""

    url: str
    ca_path: Path
    posts: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


@asynccontextmanager
async def ingestion_standin() -> AsyncIterator[Ingestion]:
    with local_tls("ingestion") as (server_context, ca_path):
        holder: list[Ingestion] = []

        async def track(request: web.Request) -> web.Response:
            holder[0].paths.append(request.path)
            body = await request.read()
            if request.headers.get("Content-Encoding") == "gzip" or body[:2] == b"\x1f\x8b":
                body = gzip.decompress(body)
            holder[0].raw.append(body)
            envelopes = json.loads(body)
            holder[0].posts.append((request.headers.get("Authorization", ""), envelopes))
            answer = {"itemsReceived": len(envelopes), "itemsAccepted": len(envelopes), "errors": []}
            # Connection: close, so the exporter keeps no socket to a stand-in that stops.
            return web.json_response(answer, headers={"Connection": "close"})

        app = web.Application()
        app.router.add_post("/{path:.*}", track)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
        await site.start()
        holder.append(Ingestion(url=f"https://127.0.0.1:{runner.addresses[0][1]}", ca_path=ca_path))
        try:
            yield holder[0]
        finally:
            await runner.cleanup()


async def test_application_insights_gets_spans_metrics_and_logs_with_the_identitys_token_and_nothing_private(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The exporter's own usage reports, remote configuration and SDK statistics: off, as in the
    # template's app settings (EXPORTER_SETTINGS).
    for name in EXPORTER_SETTINGS:
        monkeypatch.setenv(name, "true")
    async with managed_identity_standin() as identity, ingestion_standin() as ingestion:
        monkeypatch.setenv("IDENTITY_ENDPOINT", identity.endpoint)
        monkeypatch.setenv("IDENTITY_HEADER", identity.header)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ingestion.ca_path))  # the exporter's transport is requests
        settings = Settings.from_mapping({
            "APPLICATIONINSIGHTS_CONNECTION_STRING":
                f"InstrumentationKey={INSTRUMENTATION_KEY};IngestionEndpoint={ingestion.url}",
            "AZURE_CLIENT_ID": CLIENT_ID,
        })
        telemetry = telemetry_from_settings(settings.telemetry)
        with telemetry.tracer.start_as_current_span("POST /api/messages", kind=SpanKind.SERVER,
                                                   attributes={"http.route": "/api/messages",
                                                               "http.response.status_code": 200,
                                                               "activity.conversation.id": "a:personal-referrer"}):
            telemetry.metrics.referral_started("OR-KG-NOW-OCMW-SGW-2026")
        handler = telemetry.log_handler()
        assert handler is not None
        log = logging.getLogger("bot.telemetry_test")
        log.addHandler(handler)
        try:
            log.warning("mail not delivered yet for %s", REFERENCE, extra={"reference": REFERENCE, "verb": "x"})
        finally:
            log.removeHandler(handler)
        # The exporters call the token endpoint and the ingestion stand-in, both served by this event loop.
        await asyncio.to_thread(telemetry.shutdown)

    assert ingestion.posts, "nothing reached the ingestion endpoint"
    assert set(ingestion.paths) == {"/v2.1/track"}
    assert {authorization for authorization, _ in ingestion.posts} == {f"Bearer {identity.token}"}
    assert identity.requests and all(request.get("client_id") == CLIENT_ID for request in identity.requests)
    assert {request["resource"].rstrip("/") for request in identity.requests} == {"https://monitor.azure.com"}
    envelopes = [envelope for _, batch in ingestion.posts for envelope in batch]
    kinds = {envelope["data"]["baseType"] for envelope in envelopes}
    assert {"RequestData", "MetricData", "MessageData"} <= kinds, kinds
    [message] = [e["data"]["baseData"] for e in envelopes if e["data"]["baseType"] == "MessageData"]
    assert message["message"] == "mail not delivered yet for [reference]"
    assert message["properties"].get("verb") == "x" and "reference" not in message["properties"]
    metrics = [point["name"] for e in envelopes if e["data"]["baseType"] == "MetricData"
               for point in e["data"]["baseData"]["metrics"]]
    assert "vd.referrals.started" in metrics
    everything = b"".join(ingestion.raw).decode()
    assert REFERENCE not in everything and "personal-referrer" not in everything


async def test_telemetry_off_is_the_default_of_create_app(bot: BotDriver) -> None:
    telemetry = bot.services.telemetry
    assert (telemetry.tracer_provider, telemetry.meter_provider, telemetry.logger_provider) == (None, None, None)
    assert bot.services.metrics_view is None
