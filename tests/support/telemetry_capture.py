"""A whole referral with the telemetry installed as `serve` installs it, captured by in-memory exporters.

Run in a process of its own (`python -m tests.support.telemetry_capture OUT.json WORKDIR`), because
`Telemetry.install_globally` sets OpenTelemetry's global providers (which the Agents SDK's own spans
use), patches every aiohttp client session and adds a root log handler: nothing the test process
should keep. The bot runs over HTTP against the connector stand-in, the real Key Vault client on the
vault stand-in and the real SMTP transport on aiosmtpd. What happens:

1. the OCMW's channel is linked;
2. a referral: the relay answers 451 once (a retry), the mail leaves on the next pass, the OCMW acknowledges;
3. a second referral: the relay refuses it with 550 (given up, the referrer told).

The outbox gauges are read while the first mail waits and after both are done. Every span, metric data
point and log record is written to OUT.json, with the references the run made.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.sdk._logs.export import InMemoryLogExporter
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bot.app import create_app
from bot.config import Settings
from bot.delivery.smtp_transport import SmtpTransport
from bot.logging_setup import configure_logging
from bot.operations.telemetry import build_telemetry
from tests.support.activities import TeamsUser
from tests.support.bot_server import running_bot
from tests.support.card_reading import texts
from tests.support.clock import ManualClock
from tests.support.keyvault_provider import vault_provider
from tests.support.keyvault_standin import keyvault_standin
from tests.support.ocmw_flow import CHANNEL, link, ocmw_worker
from tests.support.referral_flow import reach_review
from tests.support.smtp_server import smtp_server

SECRET = "zip-password-ocmw-sint-gillis-waas"
VAULT_PASSWORD = "QW3E-RT7Y-UP9A-SD2F-GH4J"
REFERRER = TeamsUser(aad_object_id="aad-referrer-1", name="An Verpleeg", conversation_id="a:personal-referrer")


def _reference_in(card: dict[str, Any]) -> str:
    found = re.search(r"VD-[0-9]{8}-[0-9A-Z]{6}", texts(card))
    assert found, card
    return found.group()


async def capture(out: Path, workdir: Path) -> None:
    settings = Settings.from_mapping({"BOT_DATA_DIR": str(workdir / "data"), "RATE_LIMIT_ACTIONS_PER_MINUTE": "1000"})
    spans, logs, reader = InMemorySpanExporter(), InMemoryLogExporter(), InMemoryMetricReader()
    telemetry = build_telemetry(settings.telemetry, span_exporter=spans, metric_readers=[reader], log_exporter=logs,
                                batch=False)
    configure_logging("DEBUG")  # everything a log could say reaches the handler
    telemetry.install_globally("DEBUG")
    clock = ManualClock(dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC))
    references: list[str] = []
    depth_while_waiting: Any = None
    with smtp_server(tls="starttls") as smtp:
        async with keyvault_standin() as vault, vault_provider(
                vault, clock, attempts=2, backoff_seconds=0.01, timeout_seconds=2, metrics=telemetry.metrics
        ) as provider:
            vault.set_secret(SECRET, VAULT_PASSWORD)
            app = create_app(settings, clock=clock, passwords=provider, transport=SmtpTransport(smtp.settings()),
                             run_worker=False, telemetry=telemetry)
            async with running_bot(app) as bot:
                await link(bot, ocmw_worker())

                smtp.fail_next(451, stage="RCPT")
                draft_id, _ = await reach_review(bot, REFERRER)
                queued = await bot.act(REFERRER, "referral.send", {"draftId": draft_id})
                references.append(_reference_in(queued))
                clock.advance(dt.timedelta(seconds=3))
                await bot.deliver()  # 451: retried later
                await bot.services.outbox_readings.refresh()
                depth_while_waiting = json.loads(reader.get_metrics_data().to_json())  # type: ignore[union-attr]
                clock.advance(dt.timedelta(minutes=2))
                await bot.deliver()
                card_id = await bot.services.messages.slot_activity_id(f"ocmw:{references[0]}")
                assert card_id, "the OCMW's card was posted"
                await bot.act(ocmw_worker().in_thread(card_id), "ack.receive", {"reference": references[0]})
                await bot.settle()

                smtp.fail_next(550, stage="RCPT")
                draft_id, _ = await reach_review(bot, REFERRER)
                queued = await bot.act(REFERRER, "referral.send", {"draftId": draft_id})
                references.append(_reference_in(queued))
                await bot.deliver()  # 550: given up, the referrer told
                await bot.services.outbox_readings.refresh()
                final = json.loads(reader.get_metrics_data().to_json())  # type: ignore[union-attr]
    logging.getLogger("bot").warning("a log line after the run, with %s in it", references[0],
                                     extra={"reference": references[0], "protocol_id": "OR-KG-NOW-OCMW-SGW-2026"})
    AioHttpClientInstrumentor().uninstrument()
    telemetry.shutdown()
    out.write_text(json.dumps({
        "references": references,
        "channel": CHANNEL,
        "smtp_messages": len(smtp.messages),
        "spans": [json.loads(span.to_json()) for span in spans.get_finished_spans()],
        "logs": [json.loads(record.to_json()) for record in logs.get_finished_logs()],
        "metrics_while_waiting": depth_while_waiting,
        "metrics": final,
    }, indent=1))


if __name__ == "__main__":
    asyncio.run(capture(Path(sys.argv[1]), Path(sys.argv[2])))
