"""`python -m bot serve` loads only what its settings use: start-up time is import time.

Measured here (README, issue 14): MSAL with `requests` (~0.1 s) and the OpenTelemetry SDK (~50 ms)
were imported by every start, although the Bot Framework token is only asked for with
authentication on and the SDK only runs with Application Insights or the local `/metrics`.
Each test starts the real process, waits until it is ready, stops it with SIGTERM and reads the
modules it loaded from start to stop.
"""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp

from tests.support.bot_process import bot_process, wait_until_ready
from tests.support.smtp_server import free_port

ZIP_PASSWORD = "QW3E-RT7Y-UP9A-SD2F-GH4J"  # nosec B105 - a test password


async def _modules_loaded_by_serve(tmp_path: Path, **settings: str) -> set[str]:
    port = free_port()
    listing = tmp_path / "modules.txt"
    env = {
        **{key: value for key, value in os.environ.items()
           if not key.startswith(("Microsoft", "APPLICATIONINSIGHTS", "METRICS_", "AZURE_"))},
        "BOT_DATA_DIR": str(tmp_path / "data"), "PORT": str(port), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
        "LOADED_MODULES_FILE": str(listing), **settings,
    }
    log = tmp_path / "bot.log"
    with bot_process(env, log, module="tests.support.module_listing_bot") as process:
        async with aiohttp.ClientSession() as session:
            await wait_until_ready(f"http://127.0.0.1:{port}", session, "/readyz")
        assert process.poll() is None, log.read_text()
    assert process.returncode == 0, log.read_text()
    modules = set(listing.read_text(encoding="utf-8").split())
    assert "bot.app" in modules and "microsoft_agents.hosting.aiohttp" in modules, "the listing is the bot's"
    return modules


def _loaded(modules: set[str], package: str) -> list[str]:
    return sorted(name for name in modules if name == package or name.startswith(f"{package}."))


def _sdk_pipeline(modules: set[str]) -> list[str]:
    """The OpenTelemetry SDK's providers (`opentelemetry.sdk.resources` the Agents SDK imports itself)."""
    return [name for package in ("opentelemetry.sdk.metrics", "opentelemetry.sdk.trace", "opentelemetry.sdk._logs")
            for name in _loaded(modules, package)]


async def test_serve_without_authentication_or_telemetry_loads_neither_msal_nor_the_opentelemetry_sdk(
    tmp_path: Path,
) -> None:
    modules = await _modules_loaded_by_serve(tmp_path)
    assert _loaded(modules, "msal") == []
    assert _loaded(modules, "requests") == []
    assert _sdk_pipeline(modules) == []
    assert _loaded(modules, "bot.operations.metrics_endpoint") == []


async def test_serve_with_authentication_on_loads_msal(tmp_path: Path) -> None:
    modules = await _modules_loaded_by_serve(
        tmp_path, MicrosoftAppId="00000000-0000-0000-0000-00000000beef", MicrosoftAppPassword="not-used-here",
        MicrosoftAppTenantId="00000000-0000-0000-0000-0000000000aa")
    assert "msal" in modules
    assert _sdk_pipeline(modules) == []


async def test_serve_with_the_local_metrics_view_loads_the_opentelemetry_sdk(tmp_path: Path) -> None:
    modules = await _modules_loaded_by_serve(tmp_path, METRICS_PORT=str(free_port()))
    assert "opentelemetry.sdk.metrics" in modules
    assert "bot.operations.metrics_endpoint" in modules
    assert _loaded(modules, "msal") == []
