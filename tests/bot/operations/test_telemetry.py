"""Telemetry during a whole referral: nothing about anyone leaves, and the numbers an operator needs do.

`tests/support/telemetry_capture.py` runs the referral in a process of its own with the telemetry
installed as `serve` installs it (global providers, the Agents SDK's spans, every aiohttp client
traced, the root logger exported) and in-memory exporters behind the privacy gate; this test reads
what they got.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.sample_values import CLIENT_VALUES

ROOT = Path(__file__).resolve().parents[3]
PROTOCOL = "OR-KG-NOW-OCMW-SGW-2026"
#: Who took part (tests/support/telemetry_capture.py, tests/support/ocmw_flow.py): names, ids, conversations.
PEOPLE = ("An Verpleeg", "aad-referrer-1", "personal-referrer", "Olga Maatschappelijk", "aad-ocmw-1",
          "ocmw-welzijnshuis")


def _captured(folder: Path) -> dict[str, Any]:
    out = folder / "telemetry.json"
    result = subprocess.run(  # nosec B603: our own interpreter and module
        [sys.executable, "-m", "tests.support.telemetry_capture", str(out), str(folder)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={key: value for key, value in os.environ.items() if not key.startswith("APPLICATIONINSIGHTS")},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    captured: dict[str, Any] = json.loads(out.read_text())
    return captured


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _captured(tmp_path_factory.mktemp("telemetry"))


def _points(metrics: dict[str, Any], name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (point["attributes"], point)
        for resource in metrics["resource_metrics"]
        for scope in resource["scope_metrics"]
        for metric in scope["metrics"] if metric["name"] == name
        for point in metric["data"]["data_points"]
    ]


def _value(metrics: dict[str, Any], name: str, **attributes: Any) -> Any:
    """The one data point of `name` with these attributes: its value, or (count, sum) of a histogram."""
    found = [point for attrs, point in _points(metrics, name) if all(attrs.get(k) == v for k, v in attributes.items())]
    assert len(found) == 1, (name, attributes, _points(metrics, name))
    point = found[0]
    return point["value"] if "value" in point else (point["count"], point["sum"])


def _strings(node: Any) -> Iterator[str]:
    """Every key and text in the exported JSON (span names, attributes, events, log bodies, metric attributes)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield node


def test_no_span_metric_or_log_names_the_family_the_people_or_the_reference(captured: dict[str, Any]) -> None:
    references = captured["references"]
    assert len(references) == 2 and captured["smtp_messages"] == 1
    needles = [*CLIENT_VALUES, *references, *(reference.rsplit("-", 1)[1] for reference in references), *PEOPLE]
    for part in ("spans", "logs", "metrics", "metrics_while_waiting"):
        texts = list(_strings(captured[part]))
        leaks = sorted({needle for needle in needles for text in texts if needle in text})
        assert leaks == [], f"{part} carry {leaks}"


def test_every_kind_of_span_and_log_was_there_to_be_scanned(captured: dict[str, Any]) -> None:
    spans = captured["spans"]
    by_name = {span["name"]: span for span in spans}
    server = [span for span in spans if span["name"] == "POST /api/messages"]
    assert len(server) == 10 and all(span["kind"] == "SpanKind.SERVER" for span in server)
    assert {span["attributes"]["http.response.status_code"] for span in server} == {200, 202}
    assert any("INSERT INTO outbox" in span["attributes"].get("db.statement", "") for span in spans)
    clients = [span for span in spans if span["kind"] == "SpanKind.CLIENT" and "http.url" in span["attributes"]]
    assert clients and all(span["attributes"]["http.url"].count("/") == 2 for span in clients), \
        "a client span keeps scheme and host, never the path"
    assert "agents.connector.send_to_conversation" in by_name, "the Agents SDK's own spans went through the gate"
    assert all("activity.conversation.id" not in span["attributes"] for span in spans)

    logs = captured["logs"]
    queued = [log for log in logs if log["body"] == "referral queued"]
    assert queued and queued[0]["attributes"] == {"protocol_id": PROTOCOL}, "the protocol stays, the reference goes"
    [after] = [log for log in logs if log["body"].startswith("a log line after the run")]
    assert after["body"] == "a log line after the run, with [reference] in it"
    assert after["attributes"] == {"protocol_id": PROTOCOL}


def test_the_metrics_count_the_referrals_the_retry_and_the_give_up(captured: dict[str, Any]) -> None:
    metrics = captured["metrics"]
    assert _value(metrics, "vd.referrals.started", protocol=PROTOCOL) == 2
    assert _value(metrics, "vd.referrals.sent", protocol=PROTOCOL, kind="referral") == 2
    assert _value(metrics, "vd.referrals.delivered", protocol=PROTOCOL, kind="referral") == 1
    assert _value(metrics, "vd.referrals.failed", protocol=PROTOCOL, cause="permanent") == 1
    # Sent at 09:00:00, refused (451) at 09:00:03, accepted two minutes later: 123 s on the bot's clock.
    assert _value(metrics, "vd.referrals.click_to_delivered", protocol=PROTOCOL) == (1, 123.0)
    assert _value(metrics, "vd.outbox.retries", outbox="mail", cause="transient") == 1
    assert _value(metrics, "vd.outbox.give_ups", outbox="mail", cause="permanent") == 1
    reads, seconds = _value(metrics, "vd.keyvault.read.duration", outcome="ok")
    assert reads >= 1 and 0 < seconds < 5 * reads
    assert _points(metrics, "vd.keyvault.read.failures") == []


def test_the_outbox_gauges_show_the_mail_that_waits_and_then_none(captured: dict[str, Any]) -> None:
    waiting, after = captured["metrics_while_waiting"], captured["metrics"]
    assert _value(waiting, "vd.outbox.depth", outbox="mail") == 1
    assert _value(waiting, "vd.outbox.oldest_age", outbox="mail") == 3.0
    assert _value(waiting, "vd.outbox.depth", outbox="teams") == 0
    assert _value(after, "vd.outbox.depth", outbox="mail") == 0
    assert _value(after, "vd.outbox.oldest_age", outbox="mail") == 0.0


def test_turns_are_timed_by_verb_and_answers_counted_by_route_and_status(captured: dict[str, Any]) -> None:
    metrics = captured["metrics"]
    counts = {attrs["verb"]: point["count"] for attrs, point in _points(metrics, "vd.turn.duration")}
    assert counts == {"message": 3, "referral.consent": 2, "referral.details": 2, "referral.send": 2,
                      "ack.receive": 1}
    assert all(point["sum"] < 5 * point["count"] for _, point in _points(metrics, "vd.turn.duration"))
    assert _value(metrics, "vd.http.responses", **{"http.route": "/api/messages",
                                                    "http.response.status_code": 200}) == 7
    assert _value(metrics, "vd.http.responses", **{"http.route": "/api/messages",
                                                    "http.response.status_code": 202}) == 3
