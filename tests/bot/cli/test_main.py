"""`python -m bot serve` loads only what its settings use: start-up time is import time; and every command
ends a failure with one clear line and exit status 2, never a traceback.

Measured here (README, issue 14): MSAL with `requests` (~0.1 s) and the OpenTelemetry SDK (~50 ms)
were imported by every start, although the Bot Framework token is only asked for with
authentication on and the SDK only runs with Application Insights or the local `/metrics`.
Each test starts the real process, waits until it is ready, stops it with SIGTERM and reads the
modules it loaded from start to stop.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.bot_process import bot_process, wait_until_ready
from tests.support.smtp_server import free_port

ZIP_PASSWORD = "QW3E-RT7Y-UP9A-SD2F-GH4J"  # nosec B105 - a test password
ROOT = Path(__file__).resolve().parents[3]


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


# --- every administrator command ends a failure with one clear line, not a traceback ---------------------

PROTOCOL_ID = "OR-KG-NOW-OCMW-SGW-2026"


def _bot(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PROTOCOLS_DIR", "BOT_ENV")}
    environment.update({"BOT_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)}, **env)
    return subprocess.run([sys.executable, "-m", "bot", *argv], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=120, check=False)


def test_breach_report_with_a_bad_protocol_file_is_a_clear_usage_error(tmp_path: Path) -> None:
    protocols = tmp_path / "protocols"
    protocols.mkdir()
    (protocols / "broken.toml").write_text("garbage [[\n", encoding="utf-8")
    done = _bot(tmp_path, "breach-report", "--protocol", PROTOCOL_ID, PROTOCOLS_DIR=str(protocols))
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2  # README: "2 on wrong input"
    assert "broken.toml" in done.stderr


def test_register_export_into_a_missing_folder_names_the_file_not_the_database(tmp_path: Path) -> None:
    assert _bot(tmp_path, "migrate").returncode == 0
    target = tmp_path / "no" / "such" / "folder" / "register.csv"
    done = _bot(tmp_path, "register", "export", "--from", "2026-01-01", "--to", "2026-12-31",
                "--output", str(target))
    assert "Traceback" not in done.stderr, done.stderr
    assert "database unavailable" not in done.stderr, done.stderr
    assert done.returncode != 0
    assert str(target) in done.stderr


@pytest.mark.parametrize("argv", [
    ("register", "verify"),
    ("register", "export", "--from", "2026-01-01", "--to", "2026-12-31"),
    ("link-ocmw", PROTOCOL_ID),
    ("migrate",),
    ("breach-report", "--protocol", PROTOCOL_ID),
])
def test_a_file_that_is_not_a_database_is_a_one_line_error(tmp_path: Path, argv: tuple[str, ...]) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bot.sqlite3").write_text("this is not a database\n", encoding="utf-8")
    done = _bot(tmp_path, *argv)
    assert "Traceback" not in done.stderr, done.stderr[-800:]
    assert done.returncode != 0


@pytest.mark.parametrize("argv", [("register", "verify"), ("link-ocmw", PROTOCOL_ID), ("migrate",),
                                  ("breach-report", "--protocol", PROTOCOL_ID)])
def test_an_unreachable_postgresql_is_a_one_line_error(tmp_path: Path, argv: tuple[str, ...]) -> None:
    done = _bot(tmp_path, *argv, DATABASE_URL="postgresql://u@127.0.0.1:1/db", MAIL_TRANSPORT="smtp",
                SMTP_HOST="127.0.0.1", SMTP_PORT="1", MAIL_FROM="bot@example.org",
                LOCAL_ZIP_PASSWORD="Correct-Horse-Battery-Staple-2026x", LOCAL_DRAFT_KEY="ab" * 32)
    assert "Traceback" not in done.stderr, done.stderr[-800:]
    assert done.returncode != 0


def test_register_verify_on_a_database_without_tables_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bot.sqlite3").write_bytes(b"")  # an empty SQLite database: no register table
    done = _bot(tmp_path, "register", "verify")
    assert "Traceback" not in done.stderr, done.stderr[-800:]
    assert done.returncode == 2
