"""The local `/metrics` view: Prometheus text over HTTP on a loopback port of its own, never the bot's."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import aiohttp
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bot.app import create_app
from bot.config import Settings, TelemetryConfig
from bot.operations.metrics_endpoint import CONTENT_TYPE, LocalMetricsView
from bot.operations.telemetry import telemetry_from_settings
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.clock import ManualClock
from tests.support.keyvault_provider import until
from tests.support.referral_flow import PROTOCOL_ID, open_consent


async def _scrape(session: aiohttp.ClientSession, url: str) -> dict[str, list[Sample]]:
    async with session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE
        text = await response.text()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


async def test_metrics_are_served_in_prometheus_text_on_loopback_and_not_on_the_bots_port(
    metered_bot: BotDriver, referrer: TeamsUser
) -> None:
    view = metered_bot.services.metrics_view
    assert view is not None and view.url.startswith("http://127.0.0.1:") and view.url.endswith("/metrics")
    assert not view.url.startswith(metered_bot.bot_url)

    await open_consent(metered_bot, referrer)
    await metered_bot.services.outbox_readings.refresh()
    families = await _scrape(metered_bot.session, view.url)

    [started] = families["vd_referrals_started"]
    assert (started.name, started.labels, started.value) == ("vd_referrals_started_total", {"protocol": PROTOCOL_ID}, 1)
    turns = {(s.name, s.labels.get("le")): s.value
             for s in families["vd_turn_duration"] if s.labels["verb"] == "message"}
    assert turns[("vd_turn_duration_count", None)] == 1 and turns[("vd_turn_duration_bucket", "+Inf")] == 1
    assert 0 < turns[("vd_turn_duration_sum", None)] < 5
    answered = {(s.labels["http_route"], s.labels["http_response_status_code"]): s.value
                for s in families["vd_http_responses"]}
    assert answered[("/api/messages", "202")] == 1
    assert {s.labels["outbox"]: s.value for s in families["vd_outbox_depth"]} == {"mail": 0, "teams": 0}

    async with metered_bot.session.get(f"{metered_bot.bot_url}/metrics") as response:
        assert response.status == 404, "the bot's own port never serves the metrics"
    again = await _scrape(metered_bot.session, view.url)
    assert {(s.labels["http_route"], s.labels["http_response_status_code"]): s.value
            for s in again["vd_http_responses"]}[("unmatched", "404")] == 1


async def test_the_bot_without_metrics_port_listens_for_no_metrics(bot: BotDriver) -> None:
    assert bot.services.metrics_view is None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.org"])  # noqa: S104  # nosec B104: refused
def test_the_view_refuses_any_address_but_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        LocalMetricsView(InMemoryMetricReader(), host, 9464)


async def test_a_busy_metrics_port_leaves_the_bot_running_without_metrics(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        view = LocalMetricsView(InMemoryMetricReader(), "127.0.0.1", port)
        await view.start()
        await view.stop()
    assert view.url == ""
    assert f"/metrics not served: 127.0.0.1:{port}" in caplog.text


async def test_the_time_a_turn_waited_for_a_place_is_measured(settings: Settings, clock: ManualClock) -> None:
    """`TURNS_AT_ONCE` places: an operator sees whether turns queue for them (`vd.turn.wait`)."""
    settings = dataclasses.replace(settings, telemetry=TelemetryConfig(metrics_port=0), turns_at_once=1)
    app = create_app(settings, clock=clock, run_worker=False, telemetry=telemetry_from_settings(settings.telemetry))
    async with running_bot(app) as bot:
        first, second = (TeamsUser(aad_object_id=f"aad-{n}", name=f"Referrer {n}", conversation_id=f"a:personal-{n}")
                         for n in (1, 2))
        bot.connector.holding = True  # the first turn keeps the one place while its reply waits
        held = asyncio.create_task(bot.post(first.message(bot.service_url, "hulp")))
        await until(lambda: bot.connector.held == 1, 5, "the first turn's reply held")
        waiting = asyncio.create_task(bot.post(second.message(bot.service_url, "hulp")))
        await asyncio.sleep(0.3)
        bot.connector.let_go()
        assert [response.status for response in await asyncio.gather(held, waiting)] == [202, 202]
        view = bot.services.metrics_view
        assert view is not None
        families = await _scrape(bot.session, view.url)
    waits = {(s.name, s.labels.get("le")): s.value for s in families["vd_turn_wait"]}
    assert waits[("vd_turn_wait_count", None)] == 2
    assert waits[("vd_turn_wait_bucket", "0.005")] == 1  # the first found its place free
    assert 0.2 <= waits[("vd_turn_wait_sum", None)] < 5  # the second waited for the first (0.3 s, less its way in)
