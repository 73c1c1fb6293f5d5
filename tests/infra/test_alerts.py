"""The alerts (infra/modules/alerts.bicep) watch metrics the bot really emits, under the names and attributes it uses.

No Kusto engine runs here, so each log alert's query is held against the bot itself: every metric name
it filters on is one `bot.core.metrics` creates, every `customDimensions[...]` key one the bot sets on that
metric, the measured column and the alert's dimensions come out of the query's `summarize`, and every
rule mails the ops mailbox. `/readyz`, which the availability test probes, is a route of the app.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from bot.core.metrics import Metrics, OutboxReadings, Waiting
from tests.infra.test_bicep import MAIN, module_file, parsed, reference
from tests.support.clock import ManualClock

ALERTS = module_file("alerts")


def _emitted() -> dict[str, set[str]]:
    """Every metric the bot records, with the attribute keys it records it with."""
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    metrics = Metrics.from_meter(meter)
    clock = ManualClock(dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC))

    async def read() -> dict[str, Waiting]:
        return {}

    readings = OutboxReadings(read, clock)  # type: ignore[arg-type]
    readings._latest = {"mail": Waiting(1, clock.now()), "teams": Waiting(0, None)}
    readings.register(meter)
    metrics.referral_started("P")
    metrics.referral_sent("P", "referral")
    metrics.referral_delivered("P", "referral", dt.timedelta(seconds=5))
    metrics.referral_failed("P", "referral", "permanent")
    metrics.retry("mail", "transient")
    metrics.give_up("teams", "horizon")
    metrics.key_vault_read(0.1, "denied")
    metrics.turn("referral.send", 0.1)
    metrics.http_response("/api/messages", "POST", 500)
    metrics.http_response("/api/messages", "POST", 503, cause="signing_keys_unavailable")
    metrics.auth_unavailable()
    metrics.auth_refused("audience")
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: {key for point in metric.data.data_points for key in (point.attributes or {})}
        for resource in data.resource_metrics for scope in resource.scope_metrics for metric in scope.metrics
    }


def _query_alerts() -> list[dict[str, Any]]:
    variables = parsed(ALERTS)["variables"]
    alerts: list[dict[str, Any]] = variables["queryAlerts"]["value"]
    for alert in alerts:
        value = variables[alert["query"]]["value"]
        alert["kql"] = value if isinstance(value, str) else value["function"]["parameters"]["original_string"]
    return alerts


def test_every_query_reads_metrics_and_attributes_the_bot_emits() -> None:
    emitted = _emitted()
    alerts = _query_alerts()
    assert {alert["name"] for alert in alerts} == {"outbox-stuck", "give-up", "server-errors", "teams-refused",
                                                      "teams-keys-unavailable", "key-vault-failures"}
    for alert in alerts:
        kql = alert["kql"]
        [name] = re.findall(r"name == '([\w.]+)'", kql)
        assert name in emitted, (alert["name"], name, sorted(emitted))
        for key in re.findall(r"customDimensions\['([\w.]+)'\]", kql):
            assert key in emitted[name], (alert["name"], key, emitted[name])
        summarize = re.search(r"\| summarize (.*)", kql)
        assert summarize is not None
        columns = re.findall(r"(\w+) = ", kql)
        assert alert["column"] in columns, (alert["name"], alert["column"])
        grouped = summarize.group(1).partition(" by ")[2]
        assert {part.strip() for part in grouped.split(",") if part.strip()} == set(alert["dimensions"])


def test_the_thresholds_are_the_ones_operators_were_promised() -> None:
    alerts = {alert["name"]: alert for alert in _query_alerts()}
    parameters = parsed(ALERTS)["parameters"]
    stuck = alerts["outbox-stuck"]["threshold"]["operator"]
    assert stuck["type"] == "multiply" and stuck["operands"] == {"operand_1": "outboxMaxWaitMinutes", "operand_2": 60}
    assert parameters["outboxMaxWaitMinutes"]["default"] == 30
    assert alerts["give-up"]["threshold"] == 0 and alerts["key-vault-failures"]["threshold"] == 0, "any is an alert"
    assert alerts["teams-refused"]["threshold"] == 0, "one signed request refused: likely every one is"
    assert alerts["server-errors"]["threshold"] == "serverErrorPercent"
    assert "status >= 500" in alerts["server-errors"]["kql"] and "/api/messages" in alerts["server-errors"]["kql"]


def test_a_key_endpoint_outage_pages_with_its_own_alert_not_as_server_errors() -> None:
    """The 503s the bot answers while the Bot Framework's signing keys cannot be fetched are no failure of the
    bot: *server-errors* leaves them out (its runbook line reads the turns' tracebacks), and an alert of its
    own, whose description and runbook line name the key endpoint, counts them."""
    from bot.teams import route

    alerts = {alert["name"]: alert for alert in _query_alerts()}
    server_errors = alerts["server-errors"]["kql"]
    assert f"cause != '{route.SIGNING_KEYS_UNAVAILABLE}'" in server_errors, server_errors
    keys = alerts["teams-keys-unavailable"]
    assert "name == 'vd.auth.unavailable'" in keys["kql"] and keys["dimensions"] == []
    assert "signing keys" in keys["description"] and "login.botframework.com" in keys["description"]
    runbook = (Path(__file__).parents[2] / "infra" / "README.md").read_text(encoding="utf-8")
    [line] = [line for line in runbook.splitlines() if line.startswith("| *teams-keys-unavailable* |")]
    assert "login.botframework.com" in line and "cannot check tokens now" in line, line


def test_every_alert_mails_the_ops_mailbox_given_to_the_deployment() -> None:
    resources = parsed(ALERTS)["resources"]
    group = resources["opsGroup"]["config"]
    assert group["location"] == "global"
    [receiver] = group["properties"]["emailReceivers"]
    assert receiver["emailAddress"] == "opsMailbox"
    log_rules = resources["logAlerts"]["config"]["config"]["properties"]
    assert [reference(group) for group in log_rules["actions"]["actionGroups"]] == ["opsGroup.id"]
    assert log_rules["scopes"] == ["appInsightsId"]
    ready = resources["readyAlert"]["config"]["properties"]
    assert [reference(action["actionGroupId"]) for action in ready["actions"]] == ["opsGroup.id"]
    main = parsed(MAIN)
    assert main["parameters"]["opsMailbox"].get("default") is None, "a deployment must name the ops mailbox"
    params = main["modules"]["alerts"]["config"]["params"]
    assert params["opsMailbox"] == "opsMailbox"
    assert reference(params["appInsightsId"]) == "monitoring.outputs.appInsightsId"
    assert reference(params["webAppHostName"]) == "webApp.outputs.hostName"


def test_readyz_is_probed_from_outside_and_failing_five_minutes_is_an_alert() -> None:
    from bot import app

    resources = parsed(ALERTS)["resources"]
    probe = resources["readyProbe"]["config"]["properties"]
    assert probe["Request"]["RequestUrl"] == "https://${webAppHostName}/readyz"
    assert probe["ValidationRules"]["ExpectedHttpStatusCode"] == 200 and probe["Frequency"] == 300
    assert len(probe["Locations"]) >= 2
    ready = resources["readyAlert"]["config"]["properties"]
    assert ready["windowSize"] == "PT5M"
    assert ready["criteria"]["'odata.type'"] == "Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria"
    assert reference(ready["criteria"]["webTestId"]) == "readyProbe.id"
    assert ready["criteria"]["failedLocationCount"] <= len(probe["Locations"])
    assert 'web.get("/readyz", readyz)' in Path(app.__file__).read_text(encoding="utf-8")
