"""The Azure templates, checked without Azure: the `bicep` CLI cannot be installed here.

Every file is parsed with `pycep-parser` (the parser checkov uses), the modules are wired with the
parameters they declare, the security settings the issues ask for are present (issue 13: PostgreSQL with
Entra-only logins and TLS, two or more App Service instances, nothing on an instance's disk), the app
settings are the variables the bot reads, no secret is in a template, and checkov finds nothing that is
not suppressed with a reason.
"""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from bot.config import Settings
from tests.infra.helpers import CHECKOV, ROOT, require

INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
SECRETS_USER_ROLE = "4633458b-17de-408a-b874-0445c86b69e6"
ACR_PULL_ROLE = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
#: Monitoring Metrics Publisher: sends telemetry to Application Insights with an Entra token (local auth is off).
METRICS_PUBLISHER_ROLE = "3913510d-42f4-4e42-8a64-420c390055eb"
#: App settings App Service itself reads, not the bot.
PLATFORM_SETTINGS = {"WEBSITES_PORT", "WEBSITES_ENABLE_APP_SERVICE_STORAGE", "WEBSITES_CONTAINER_STOP_TIME_LIMIT",
                     # read by the Azure Monitor exporter (the bot reads the connection string too)
                     "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED",
                     "APPLICATIONINSIGHTS_SDKSTATS_DISABLED"}
#: The address pair of PostgreSQL's "allow Azure services" firewall rule (not a listening address).
AZURE_SERVICES_ONLY = "0.0.0.0"  # noqa: S104
#: The storage layer's settings (issue 13's contract), read by the PostgreSQL backend built beside these templates.
STORAGE_SETTINGS = {"DATABASE_URL", "DATABASE_AUTH"}
#: A value for each webapp.bicep parameter an app setting takes, as a deployment would give it.
DEPLOYED_PARAMETERS = {
    "botAppId": "00000000-0000-4000-8000-000000000001",
    "botAppType": "UserAssignedMSI",
    "tenantId": "72f988bf-0000-4000-8000-000000000001",
    "keyVaultUri": "https://kv-vd.vault.azure.net/",
    "identityClientId": "00000000-0000-4000-8000-000000000001",
    "mailFrom": "doorverwijzing@opgroeien.be",
    "referrerTenantIds": "72f988bf-0000-4000-8000-000000000001",
    "ocmwTenantIds": "0c3c0c3c-0000-4000-8000-000000000002,0c3c0c3c-0000-4000-8000-000000000003",
    "databaseUrl": "postgresql://vd-prod-id@vd-prod-pg-abc.postgres.database.azure.com:5432/veilig_doorverwijzen"
                   "?sslmode=verify-full",
}


@cache
def parser() -> BicepParser:
    return BicepParser()  # builds its grammar: about a second


@cache
def parsed(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = parser().parse(file_path=path)
    return result


def module_file(name: str) -> Path:
    return INFRA / "modules" / f"{name}.bicep"


def resources_of(path: Path, kind: str) -> list[dict[str, Any]]:
    return [r for r in parsed(path).get("resources", {}).values() if r["type"] == kind]


def one_resource(path: Path, kind: str) -> dict[str, Any]:
    found = resources_of(path, kind)
    assert len(found) == 1, f"{path.name}: expected one {kind}, found {len(found)}"
    config: dict[str, Any] = found[0]["config"]
    return config


def decorator(spec: dict[str, Any], kind: str) -> Any:
    return next(d["argument"] for d in spec.get("decorators", []) if d["type"] == kind)


def reference(expression: Any) -> str:
    """`identity.outputs.name` for pycep's nested property accessors; a plain name as it is."""
    if isinstance(expression, str):
        return expression
    operands = expression["operator"]["operands"]
    assert expression["operator"]["type"] == "property_accessor", expression
    return f"{reference(operands['operand_1'])}.{reference(operands['operand_2'])}"


def server_parameters() -> dict[str, str]:
    """The PostgreSQL server parameters the template sets, by name."""
    values = parsed(module_file("postgres"))["variables"]["serverParameters"]["value"]
    return {parameter["name"]: parameter["value"] for parameter in values}


def app_settings() -> dict[str, Any]:
    variables = parsed(module_file("webapp"))["variables"]
    settings = [*variables["baseSettings"]["value"], *variables["passwordSetting"]["value"]]
    return {setting["name"]: setting["value"] for setting in settings}


def names_the_bot_reads() -> set[str]:
    source = (ROOT / "bot" / "config.py").read_text(encoding="utf-8")
    return set(re.findall(r'"([A-Za-z][A-Za-z_]*)"', source))


@pytest.mark.parametrize("path", BICEP_FILES, ids=[str(p.relative_to(INFRA)) for p in BICEP_FILES])
def test_every_template_parses(path: Path) -> None:
    assert parsed(path)


def test_the_expected_modules_exist() -> None:
    names = {p.stem for p in (INFRA / "modules").glob("*.bicep")}
    assert {"identity", "monitoring", "keyvault", "storage", "webapp", "bot", "postgres"} <= names


def test_every_module_gets_exactly_the_parameters_it_declares() -> None:
    for name, module in parsed(MAIN)["modules"].items():
        path = (MAIN.parent / module["detail"]["path"]).resolve()
        assert path.is_file(), f"module {name}: {path} does not exist"
        declared = parsed(path).get("parameters", {})
        config = module["config"]
        config = config.get("config", config)  # a conditional module (`= if (...) {`) nests its body
        passed = set(config["params"])
        assert passed <= set(declared), f"module {name} gets unknown parameters {passed - set(declared)}"
        required = {p for p, spec in declared.items() if spec.get("default") is None}
        assert required <= passed, f"module {name} misses required parameters {required - passed}"


def test_main_has_parameters_for_names_location_and_tenant() -> None:
    parameters = parsed(MAIN)["parameters"]
    assert parameters["location"]["default"] == "westeurope"
    assert "tenantId" in parameters
    for name in ("webAppName", "botName", "keyVaultName", "storageAccountName", "identityName", "logAnalyticsName",
                 "postgresServerName"):
        assert name in parameters, name


def test_no_secret_goes_through_the_templates() -> None:
    for path in BICEP_FILES:
        document = parsed(path)
        for name, spec in document.get("parameters", {}).items():
            decorators = {d["type"] for d in spec.get("decorators", [])}
            assert "secure" not in decorators, f"{path.name}: {name} is a secret parameter"
            assert not re.search(r"password|secret|key$", name, re.IGNORECASE) or name.endswith("SecretName"), name
        for name in document.get("outputs", {}):
            assert not re.search(r"password|secret|connectionstring|key$", name, re.IGNORECASE) or name == "keyVaultUri"
        text = path.read_text(encoding="utf-8")
        assert "listKeys" not in text and "listSecrets" not in text, path.name


def test_the_bot_is_single_tenant_or_a_managed_identity() -> None:
    main = parsed(MAIN)["parameters"]["botAppType"]
    allowed = next(d["argument"] for d in main["decorators"] if d["type"] == "allowed")
    assert set(allowed) == {"UserAssignedMSI", "SingleTenant"}
    assert main["default"] == "UserAssignedMSI"
    bot = one_resource(module_file("bot"), "Microsoft.BotService/botServices")
    assert bot["properties"]["msaAppType"] == "appType"
    assert bot["properties"]["disableLocalAuth"] is True
    channel = one_resource(module_file("bot"), "Microsoft.BotService/botServices/channels")
    assert channel["properties"]["channelName"] == "MsTeamsChannel"


def test_the_web_app_is_https_only_with_tls_12_no_ftp_and_a_health_check() -> None:
    site = one_resource(module_file("webapp"), "Microsoft.Web/sites")
    properties = site["properties"]
    assert properties["httpsOnly"] is True
    config = properties["siteConfig"]
    assert config["minTlsVersion"] == "1.2"
    assert config["scmMinTlsVersion"] == "1.2"
    assert config["ftpsState"] == "Disabled"
    assert config["healthCheckPath"] == "/healthz"
    assert config["linuxFxVersion"].startswith("DOCKER|")
    assert site["identity"]["type"] == "UserAssigned"
    plan = one_resource(module_file("webapp"), "Microsoft.Web/serverfarms")
    assert plan["kind"] == "linux"
    assert plan["properties"]["reserved"] is True
    policies = resources_of(module_file("webapp"), "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert sorted(p["config"]["name"] for p in policies) == ["ftp", "scm"]
    assert all(p["config"]["properties"]["allow"] is False for p in policies)


def test_the_app_settings_are_the_variables_the_bot_reads() -> None:
    settings = app_settings()
    required = {
        "MicrosoftAppId",
        "MicrosoftAppType",
        "MicrosoftAppTenantId",
        "KEY_VAULT_URL",
        "AZURE_CLIENT_ID",
        "MAIL_TRANSPORT",
        "MAIL_FROM",
        "BOT_ENV",
    }
    assert required <= set(settings)
    assert settings["MAIL_TRANSPORT"] == "graph"
    assert settings["BOT_ENV"] == "production"
    unknown = set(settings) - names_the_bot_reads() - PLATFORM_SETTINGS - STORAGE_SETTINGS
    assert unknown == set(), "the bot does not read these"


def test_the_app_settings_pass_the_production_check() -> None:
    declared = set(parsed(module_file("webapp"))["parameters"])
    environment = {}
    for name, value in app_settings().items():
        if isinstance(value, str) and value in declared:
            environment[name] = DEPLOYED_PARAMETERS[value]
        elif isinstance(value, str) and value.startswith("@Microsoft.KeyVault("):
            environment[name] = "the-secret-app-service-resolved"  # what the bot sees once App Service resolved it
        elif isinstance(value, str) and name not in PLATFORM_SETTINGS:
            environment[name] = value
    assert {"REFERRER_TENANT_IDS", "OCMW_TENANT_IDS"} <= set(environment)
    settings = Settings.from_mapping(environment)  # BOT_ENV=production: raises ConfigError on any refusal
    assert settings.environment == "production" and settings.production_refusals == []
    assert len(settings.ocmw_channels.tenant_ids) == 2


def test_main_passes_the_tenant_lists_and_asks_for_the_ocmw_tenants() -> None:
    parameters = parsed(MAIN)["parameters"]
    assert "default" not in parameters["ocmwTenantIds"] or parameters["ocmwTenantIds"]["default"] is None
    params = parsed(MAIN)["modules"]["webApp"]["config"]["params"]
    assert params["ocmwTenantIds"] == "ocmwTenantIds" and params["referrerTenantIds"] == "referrerTenantIds"
    example = json.loads((INFRA / "main.parameters.example.json").read_text(encoding="utf-8"))["parameters"]
    assert "ocmwTenantIds" in example


def test_the_only_password_setting_is_a_key_vault_reference() -> None:
    settings = app_settings()
    assert settings["MicrosoftAppPassword"].startswith("@Microsoft.KeyVault(")
    for name, value in settings.items():
        if name != "MicrosoftAppPassword":
            assert not re.search(r"password|secret", name, re.IGNORECASE), name
            assert "@Microsoft.KeyVault" not in str(value), name


def test_the_key_vault_uses_rbac_purge_protection_and_soft_delete() -> None:
    vault = one_resource(module_file("keyvault"), "Microsoft.KeyVault/vaults")["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enablePurgeProtection"] is True
    assert vault["enableSoftDelete"] is True
    assert "accessPolicies" not in vault
    assert vault["enabledForTemplateDeployment"] is False


def test_the_identity_may_only_read_secrets_of_this_vault_pull_images_and_publish_telemetry() -> None:
    grants = []
    for path in BICEP_FILES:
        for assignment in resources_of(path, "Microsoft.Authorization/roleAssignments"):
            config = assignment["config"]
            role = json.dumps(config["properties"]["roleDefinitionId"])
            grants.append((path.stem, config["scope"], role))
    assert len(grants) == 3
    vault_grant = next(g for g in grants if g[0] == "keyvault")
    assert vault_grant[1] == "vault"
    assert "secretsUserRoleId" in vault_grant[2]
    assert SECRETS_USER_ROLE in module_file("keyvault").read_text(encoding="utf-8")
    registry_grant = next(g for g in grants if g[0] == "acr-pull")
    assert registry_grant[1] == "registry"
    assert ACR_PULL_ROLE in module_file("acr-pull").read_text(encoding="utf-8")
    telemetry_grant = next(g for g in grants if g[0] == "monitoring")
    assert telemetry_grant[1] == "appInsights" and "metricsPublisherRoleId" in telemetry_grant[2]
    assert METRICS_PUBLISHER_ROLE in module_file("monitoring").read_text(encoding="utf-8")
    params = parsed(MAIN)["modules"]["monitoring"]["config"]["params"]
    assert reference(params["publisherPrincipalId"]) == "identity.outputs.principalId"


def test_the_storage_account_is_private_and_tls_12_only() -> None:
    storage = one_resource(module_file("storage"), "Microsoft.Storage/storageAccounts")["properties"]
    assert storage["allowBlobPublicAccess"] is False
    assert storage["minimumTlsVersion"] == "TLS1_2"
    assert storage["supportsHttpsTrafficOnly"] is True
    assert storage["allowSharedKeyAccess"] is False


def test_the_web_app_and_the_vault_send_their_logs_to_log_analytics() -> None:
    for module, target, categories in (
        ("webapp", "site", {"AppServiceHTTPLogs", "AppServiceConsoleLogs", "AppServiceAuditLogs"}),
        ("keyvault", "vault", {"AuditEvent"}),
        ("postgres", "server", {"PostgreSQLLogs"}),
    ):
        setting = one_resource(module_file(module), "Microsoft.Insights/diagnosticSettings")
        assert setting["scope"] == target
        assert setting["properties"]["workspaceId"] == "workspaceId"
        assert categories <= {log["category"] for log in setting["properties"]["logs"]}
        assert {metric["category"] for metric in setting["properties"]["metrics"]} == {"AllMetrics"}
    components = one_resource(module_file("monitoring"), "Microsoft.Insights/components")
    assert components["properties"]["WorkspaceResourceId"]


# --- issue 13: PostgreSQL, several instances, nothing on an instance's disk ---------------------------------


def test_the_database_server_takes_entra_tokens_and_no_passwords() -> None:
    server = one_resource(module_file("postgres"), "Microsoft.DBforPostgreSQL/flexibleServers")
    properties = server["properties"]
    assert properties["version"] == "16"
    assert properties["authConfig"] == {"activeDirectoryAuth": "Enabled", "passwordAuth": "Disabled",
                                        "tenantId": "tenantId"}
    assert "administratorLogin" not in properties and "administratorLoginPassword" not in properties


def test_the_bots_identity_is_the_database_role_in_the_url() -> None:
    administrators = resources_of(module_file("postgres"), "Microsoft.DBforPostgreSQL/flexibleServers/administrators")
    app = next(a["config"] for a in administrators if a["config"]["config"]["name"] == "appPrincipalId")
    assert app["config"]["properties"] == {"principalName": "appPrincipalName", "principalType": "ServicePrincipal",
                                           "tenantId": "tenantId"}
    params = parsed(MAIN)["modules"]["postgres"]["config"]["params"]
    assert reference(params["appPrincipalId"]) == "identity.outputs.principalId"
    assert reference(params["appPrincipalName"]) == "identity.outputs.name"
    url = parsed(module_file("postgres"))["outputs"]["databaseUrl"]["value"]
    assert url.startswith("postgresql://${uriComponent(appPrincipalName)}@")


def test_the_database_url_verifies_the_server_and_holds_no_password() -> None:
    url = parsed(module_file("postgres"))["outputs"]["databaseUrl"]["value"]
    assert re.fullmatch(r"postgresql://[^:@/]+\}@\$\{[^}]+\}:5432/\$\{database\.name\}\?sslmode=verify-full", url), url
    assert re.search(r"password", url, re.IGNORECASE) is None
    assert parsed(module_file("postgres"))["parameters"]["databaseName"]["default"] == "veilig_doorverwijzen"
    settings = app_settings()
    assert settings["DATABASE_URL"] == "databaseUrl" and settings["DATABASE_AUTH"] == "entra"
    passed = parsed(MAIN)["modules"]["webApp"]["config"]["params"]["databaseUrl"]
    assert reference(passed) == "postgres.outputs.databaseUrl"
    deployed = DEPLOYED_PARAMETERS["databaseUrl"]
    assert deployed.endswith("?sslmode=verify-full") and ":" not in deployed.split("//")[1].split("@")[0]


def test_the_database_server_requires_tls_12() -> None:
    parameters = server_parameters()
    assert parameters["require_secure_transport"] == "on"
    assert parameters["ssl_min_protocol_version"] == "TLSv1.2"


def test_the_server_log_has_connections_but_never_statement_parameters() -> None:
    parameters = server_parameters()
    assert parameters["log_connections"] == "on" and parameters["log_disconnections"] == "on"
    assert parameters["log_statement"] in {"none", "ddl"}
    assert parameters["log_min_duration_statement"] == "-1"
    assert parameters["log_parameter_max_length"] == "0" and parameters["log_parameter_max_length_on_error"] == "0"
    assert parameters["log_error_verbosity"] == "terse"
    loop = resources_of(module_file("postgres"), "Microsoft.DBforPostgreSQL/flexibleServers/configurations")
    assert len(loop) == 1
    assert {"type": "batchSize", "argument": 1} in loop[0]["decorators"], "the server takes one change at a time"
    assert loop[0]["config"]["loop_type"]["detail"]["array_name"] == "serverParameters"


def test_high_availability_backups_and_size_are_parameters_with_production_defaults() -> None:
    document = parsed(module_file("postgres"))
    parameters = document["parameters"]
    properties = one_resource(module_file("postgres"), "Microsoft.DBforPostgreSQL/flexibleServers")["properties"]
    assert properties["highAvailability"] == {"mode": "highAvailabilityMode"}
    assert set(decorator(parameters["highAvailabilityMode"], "allowed")) == {"ZoneRedundant", "Disabled"}
    assert parameters["highAvailabilityMode"]["default"] == "ZoneRedundant"
    assert parameters["skuName"]["default"] == "Standard_D2ds_v5"
    assert parameters["skuTier"]["default"] == "GeneralPurpose"
    assert properties["backup"]["backupRetentionDays"] == "backupRetentionDays"
    assert parameters["backupRetentionDays"]["default"] == 35
    assert "geoRedundantBackup" in json.dumps(properties["backup"]["geoRedundantBackup"])
    assert properties["storage"]["autoGrow"] == "Enabled"
    main = parsed(MAIN)["parameters"]
    assert main["postgresHighAvailability"]["default"] == "ZoneRedundant"
    assert main["postgresBackupRetentionDays"]["default"] == 35


def test_the_database_server_is_reached_from_azure_only() -> None:
    rules = resources_of(module_file("postgres"), "Microsoft.DBforPostgreSQL/flexibleServers/firewallRules")
    assert len(rules) == 1
    rule = rules[0]["config"]
    assert rule["name"] == "AllowAllAzureServicesAndResourcesWithinAzureIps"
    assert rule["properties"] == {"startIpAddress": AZURE_SERVICES_ONLY, "endIpAddress": AZURE_SERVICES_ONLY}
    database = one_resource(module_file("postgres"), "Microsoft.DBforPostgreSQL/flexibleServers/databases")
    assert database["name"] == "databaseName" and database["properties"]["charset"] == "UTF8"


def test_a_stop_gives_the_bot_time_to_finish_what_it_is_sending() -> None:
    """Between SIGTERM and SIGKILL the bot lets its mails in flight finish (bot.app.STOP_DRAIN_SECONDS)."""
    from bot.app import STOP_DRAIN_SECONDS

    assert int(app_settings()["WEBSITES_CONTAINER_STOP_TIME_LIMIT"]) >= STOP_DRAIN_SECONDS + 10


def test_nothing_of_the_bots_state_is_on_an_instances_disk() -> None:
    settings = app_settings()
    assert "BOT_DATA_DIR" not in settings, "in PostgreSQL mode the bot needs no data folder"
    assert not any(isinstance(v, str) and v.startswith("/home") for v in settings.values())
    assert settings["WEBSITES_ENABLE_APP_SERVICE_STORAGE"] == "false"
    for path in BICEP_FILES:
        text = path.read_text(encoding="utf-8").lower()
        assert "sqlite" not in text and "one instance" not in text, path.name


def test_the_web_app_runs_on_two_or_more_instances_across_zones() -> None:
    parameters = parsed(module_file("webapp"))["parameters"]
    assert decorator(parameters["capacity"], "min_value") >= 2 and parameters["capacity"]["default"] >= 2
    assert parameters["zoneRedundant"]["default"] is True
    assert parameters["skuName"]["default"] == "P0v3"
    plan = one_resource(module_file("webapp"), "Microsoft.Web/serverfarms")
    assert plan["sku"]["capacity"] == "capacity" and plan["properties"]["zoneRedundant"] == "zoneRedundant"
    site = one_resource(module_file("webapp"), "Microsoft.Web/sites")
    assert site["properties"]["clientAffinityEnabled"] is False
    assert site["properties"]["siteConfig"]["numberOfWorkers"] == "capacity"
    main = parsed(MAIN)
    assert decorator(main["parameters"]["appServiceCapacity"], "min_value") >= 2
    assert main["parameters"]["appServiceSkuName"]["default"] == "P0v3"
    params = main["modules"]["webApp"]["config"]["params"]
    assert params["capacity"] == "appServiceCapacity" and params["zoneRedundant"] == "appServiceZoneRedundant"


def test_checkov_finds_nothing_unexplained() -> None:
    require([] if CHECKOV.exists() else [str(CHECKOV)], "make checkov")
    result = subprocess.run(
        [str(CHECKOV), "-d", str(INFRA), "--framework", "bicep", "--skip-download", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["failed"] == 0, [c["check_id"] for c in report["results"]["failed_checks"]]
    assert summary["passed"] > 20
    for check in report["results"]["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason.strip()) >= 40, f"{check['check_id']} is suppressed without a real reason"


def test_autovacuum_looks_at_the_queue_tables_often() -> None:
    """Revision 0006 vacuums the queue tables after 500 dead rows; how soon depends on how often autovacuum
    looks (Azure's default is every minute: at peak load about 14 000 dead index entries for a claim to visit)."""
    assert int(server_parameters()["autovacuum_naptime"]) <= 15
