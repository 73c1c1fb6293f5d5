"""The DPOs' documents (docs/verwerkers.md, docs/dpia.md) cannot drift from the code, the templates or the
protocol files: every processor named, every cited file there, the data categories, retention periods,
regions and the mail copy as the code has them."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from email.message import EmailMessage
from pathlib import Path

import pytest

import cards
from bot.config import Settings
from bot.core.protocols import DEFAULT_RETENTION
from bot.core.referral_values import DATA_CATEGORIES, DETAIL_FIELDS, ITEM_FIELDS, LEGAL_BASIS
from bot.delivery.graph_transport import graph_message
from tests.infra.helpers import ROOT

DOCS = ROOT / "docs"
PROCESSORS = DOCS / "verwerkers.md"
DPIA = DOCS / "dpia.md"
DPO_GUIDE = DOCS / "handleiding-dpo.md"
INFRA = ROOT / "infra"
PROTOCOL_FILES = sorted((INFRA / "protocols").glob("*.toml"))
PROTOCOLS = {path.name: tomllib.loads(path.read_text(encoding="utf-8")) for path in PROTOCOL_FILES}

#: The processors issue 12 names (point 5), as the heading and the overview row of docs/verwerkers.md call them;
#: the database is Azure Database for PostgreSQL since issue 13 (SQLite stays for local runs only).
NAMED_PROCESSORS = (
    "Microsoft Teams",
    "Azure Bot Service",
    "Microsoft Entra ID",
    "Exchange Online",
    "Microsoft Graph",
    "SMTP-relay",
    "Azure App Service",
    "Azure Key Vault",
    "Azure Database for PostgreSQL",
    "Log Analytics",
    "Application Insights",
    "mailprovider van het OCMW",
)
#: Python packages that would mean another database than PostgreSQL (Azure) and SQLite (local) the documents describe.
OTHER_DATABASE_DRIVERS = ("pymysql", "mysqlclient", "pyodbc", "pymssql", "oracledb", "pymongo", "azure-cosmos")
#: Packages that would send telemetry to Application Insights, which verwerkers.md says nothing does.
TELEMETRY_PACKAGES = ("azure-monitor", "applicationinsights", "opencensus", "opentelemetry")
DUTCH_MONTHS = ("januari", "februari", "maart", "april", "mei", "juni", "juli", "augustus", "september",
                "oktober", "november", "december")
REPOSITORY_ROOTS = ("bot/", "tests/", "infra/", "cards/", "docs/")
CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
SEPARATOR = re.compile(r"^\|[\s|:-]+\|$")


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def flat(markdown: str) -> str:
    """Markdown without emphasis and line breaks, for phrases that may wrap."""
    return " ".join(markdown.replace("**", "").split())


def sections(markdown: str) -> dict[str, str]:
    """`## heading` -> the text up to the next heading of that level."""
    parts = re.split(r"^## (.+)$", markdown, flags=re.MULTILINE)
    return {heading.strip(): body for heading, body in zip(parts[1::2], parts[2::2], strict=True)}


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of every table body row: the header (the row above a `| --- |` line) and separators left out."""
    lines = markdown.splitlines()
    rows = []
    for index, line in enumerate(lines):
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if not line.startswith("|") or SEPARATOR.match(line) or SEPARATOR.match(following):
            continue
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def cited_paths(markdown: str) -> list[str]:
    return [code for code in CODE.findall(markdown) if code.startswith(REPOSITORY_ROOTS) or code == "README.md"]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(heading) for heading in re.findall(r"^#+ (.+)$", text(path), flags=re.MULTILINE)}


def bicep_default(path: Path, parameter: str) -> str:
    match = re.search(rf"^param {parameter} \w+ = '?([^'\n]+)'?$", text(path), flags=re.MULTILINE)
    assert match, f"{path.name}: no default for {parameter}"
    return match.group(1)


def web_app_setting(name: str) -> str:
    match = re.search(rf"name: '{name}'\s+value: '([^']+)'", text(INFRA / "modules" / "webapp.bicep"))
    assert match, name
    return match.group(1)


def requirements() -> str:
    return text(ROOT / "requirements.txt").lower()


# --- docs/verwerkers.md -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMED_PROCESSORS)
def test_every_processor_the_issue_names_has_a_row_and_a_section(name: str) -> None:
    document = text(PROCESSORS)
    first_cells = [row[0] for row in table_rows(sections(document)["Overzicht"])]
    assert any(name in cell for cell in first_cells), f"no row for {name} in the overview table"
    assert any(name in heading for heading in sections(document)), f"no section about {name}"


def test_every_processor_row_says_who_where_and_what_it_sees() -> None:
    rows = table_rows(sections(text(PROCESSORS))["Overzicht"])
    assert len(rows) >= 10
    for row in rows:
        assert len(row) == 5 and all(row), f"incomplete row: {row}"


def test_the_regions_are_those_of_the_bicep_templates() -> None:
    document = text(PROCESSORS)
    region = bicep_default(INFRA / "main.bicep", "location")
    for heading in ("Azure App Service (de container van de bot)", "Azure Key Vault",
                    "Log Analytics en Application Insights", "De databank: Azure Database for PostgreSQL"):
        assert f"`{region}`" in sections(document)[heading], heading
    bot_location = re.search(r"location: '([^']+)'", text(INFRA / "modules" / "bot.bicep"))
    assert bot_location
    bot_section = sections(document)["Azure Bot Service (de Bot Framework-connector)"]
    assert f"location: '{bot_location.group(1)}'" in bot_section


def test_the_log_retention_is_that_of_the_monitoring_template() -> None:
    days = bicep_default(INFRA / "modules" / "monitoring.bicep", "retentionInDays")
    assert f"{days} dagen" in flat(sections(text(PROCESSORS))["Log Analytics en Application Insights"])
    assert f"Log Analytics bewaart de logboeken van de bot (zonder gegevens van het gezin) {days} dagen" in flat(
        text(DPIA))


def test_the_mail_transport_and_the_database_login_are_those_the_web_app_sets() -> None:
    document = text(PROCESSORS)
    assert f"`MAIL_TRANSPORT={web_app_setting('MAIL_TRANSPORT')}`" in document
    assert f"`DATABASE_AUTH={web_app_setting('DATABASE_AUTH')}`" in document
    storage = web_app_setting("WEBSITES_ENABLE_APP_SERVICE_STORAGE")
    assert f"`WEBSITES_ENABLE_APP_SERVICE_STORAGE={storage}`" in document
    assert "BOT_DATA_DIR=/home" not in document
    assert "name: 'BOT_DATA_DIR'" not in text(INFRA / "modules" / "webapp.bicep")


def test_the_database_backups_are_those_of_the_postgres_template() -> None:
    section = flat(sections(text(PROCESSORS))["De databank: Azure Database for PostgreSQL"])
    main = INFRA / "main.bicep"
    days = bicep_default(main, "postgresBackupRetentionDays")
    assert f"{days} dagen" in section
    geo = bicep_default(main, "postgresGeoRedundantBackup") == "true"
    assert ("ook in het gekoppelde gebied `northeurope`" in section) == geo
    assert bicep_default(INFRA / "modules" / "postgres.bicep", "backupRetentionDays") == days


def test_what_the_document_says_about_the_sent_items_copy_is_what_the_graph_transport_does() -> None:
    message = EmailMessage()
    message["To"] = "welzijnshuis@sint-gillis-waas.be"
    message.set_content("x")
    keeps_a_copy = graph_message(message)["saveToSentItems"]
    said = "een kopie blijft in Verzonden items" in flat(text(PROCESSORS))
    assert said == keeps_a_copy, (
        "verwerkers.md and bot/delivery/graph_transport.py disagree about the copy in Sent Items")


def test_the_database_is_the_one_the_document_describes() -> None:
    assert "Azure Database for PostgreSQL" in text(PROCESSORS) and "`infra/modules/postgres.bicep`" in text(PROCESSORS)
    for driver in OTHER_DATABASE_DRIVERS:
        assert driver not in requirements(), f"{driver} is used: describe that database in docs/verwerkers.md"


def test_what_the_bot_sends_to_application_insights_is_in_the_document() -> None:
    """Telemetry is used (issue 16): the document says what goes, what never goes, and how that is tested."""
    used = [package for package in TELEMETRY_PACKAGES if package in requirements()]
    assert used, "no telemetry package: say so in docs/verwerkers.md again"
    document = flat(text(PROCESSORS))
    for words in ("`bot/operations/telemetry.py`", "`bot/core/metrics.py`", "`bot/operations/telemetry_privacy.py`",
                  "`tests/bot/operations/test_telemetry.py`",
                  "Geen gegevens van het gezin, geen namen of id's van personeel, geen referenties"):
        assert words in document, words


# --- docs/dpia.md -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("document", [DPIA, PROCESSORS], ids=["dpia", "verwerkers"])
def test_every_file_a_document_cites_exists(document: Path) -> None:
    paths = cited_paths(text(document))
    assert paths
    for cited in paths:
        if "*" in cited:
            assert list(ROOT.glob(cited)), cited
        else:
            assert (ROOT / cited.rstrip("/")).exists(), f"{document.name} cites {cited}, which does not exist"


@pytest.mark.parametrize("document", [DPIA, PROCESSORS, DPO_GUIDE], ids=["dpia", "verwerkers", "handleiding"])
def test_every_link_between_the_documents_leads_somewhere(document: Path) -> None:
    for target in LINK.findall(text(document)):
        if target.startswith(("http://", "https://", "mailto:")) or target.endswith(".png"):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (document.parent / file_part).resolve() if file_part else document
        assert linked.is_file(), f"{document.name}: {target}"
        if anchor:
            assert anchor in anchors(linked), f"{document.name}: no heading for #{anchor} in {linked.name}"


def test_every_risk_names_where_its_measures_are_built_or_tested() -> None:
    risks = table_rows(sections(text(DPIA))["3. Risico's voor het gezin en de maatregelen"])
    assert len(risks) >= 6
    for risk in risks:
        assert cited_paths(risk[-1]), f"no file for the measures of {risk[0]}"
    cited = {path for risk in risks for path in cited_paths(risk[-1])}
    assert any(path.startswith("tests/") for path in cited) and any(path.startswith("bot/") for path in cited)


def test_the_data_categories_are_those_of_the_register() -> None:
    document = text(DPIA)
    named = {code for code in CODE.findall(document) if re.fullmatch(r"(identification|contact):\w+", code)}
    assert named == set(DATA_CATEGORIES)
    rows = {row[0].strip("`"): row for row in table_rows(document) if row[0].strip("`") in DATA_CATEGORIES}
    for category in DATA_CATEGORIES:
        fields = ITEM_FIELDS[category.split(":")[1]]
        for field in fields:
            label = cards.text("nl", f"field.{field}.label").split(" (")[0]
            assert label in rows[category][1], f"{category}: the card's field {label} is not named"
    assert sorted(field for fields in ITEM_FIELDS.values() for field in fields) == sorted(DETAIL_FIELDS), (
        "a field on the card belongs to no data category: add it to the DPIA")


def test_the_legal_basis_is_the_one_the_register_records() -> None:
    document = flat(text(DPIA))
    for words in ("10/1", "30 april 2004", "18 juli 2008"):
        assert words in LEGAL_BASIS and words in document, words
    assert "artikel 8, §1" in document


def _retention(protocol: dict[str, object]) -> dict[str, object]:
    values = {field.name: getattr(DEFAULT_RETENTION, field.name) for field in dataclasses.fields(DEFAULT_RETENTION)}
    values["closed_states"] = {state.value for state in DEFAULT_RETENTION.closed_states}
    table = protocol.get("retention", {})
    assert isinstance(table, dict)
    values.update({key: set(value) if key == "closed_states" else value for key, value in table.items()})
    return values


def _quoted_retention() -> dict[str, str]:
    """The "hoe lang" cell of each retention row, by the field named in its last cell."""
    rows = table_rows(sections(text(DPIA))["1. Beschrijving van de verwerking"])
    return {row[-1].strip("`"): row[1] for row in rows if re.fullmatch(r"`\w+`", row[-1])}


@pytest.mark.parametrize("protocol_file", sorted(PROTOCOLS))
def test_the_retention_figures_quoted_are_those_of_every_protocol_file(protocol_file: str) -> None:
    quoted = _quoted_retention()
    retention = _retention(PROTOCOLS[protocol_file])
    different = f"{protocol_file} has other retention periods: the DPIA's table must say which protocol has which"
    for key, unit in (("referral_days_after_closure", "dagen"), ("tombstone_days", "dagen"),
                      ("pairing_code_days", "dagen"), ("register_years", "jaar")):
        assert re.findall(rf"(\d+) {unit}", quoted[key]) == [str(retention[key])], f"{key}: {different}"
    states = {state.strip() for state in quoted["closed_states"].split(",")}
    assert states == retention["closed_states"], f"closed_states: {different}"


def test_the_draft_lifetime_quoted_is_the_default() -> None:
    draft_ttl = next(field for field in dataclasses.fields(Settings) if field.name == "draft_ttl").default
    minutes = int(draft_ttl.total_seconds() // 60)
    assert re.findall(r"(\d+) minuten", _quoted_retention()["DRAFT_TTL_MINUTES"]) == [str(minutes)]


def test_the_protocols_named_in_the_dpia_are_in_force_from_the_date_it_gives() -> None:
    document = flat(text(DPIA))
    named = [protocol for protocol in PROTOCOLS.values() if str(protocol["id"]) in document]
    assert named
    for protocol in named:
        start = protocol["in_force_from"]
        assert f"{start.day} {DUTCH_MONTHS[start.month - 1]} {start.year}" in document, protocol["id"]


# --- both -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("document", [DPIA, PROCESSORS], ids=["dpia", "verwerkers"])
def test_the_documents_name_both_dpos_and_the_ocmw_mailbox(document: Path) -> None:
    content = text(document)
    for protocol in PROTOCOLS.values():
        sender, recipient = protocol["sender"], protocol["recipient"]
        assert isinstance(sender, dict) and isinstance(recipient, dict)
        for address in (sender["dpo"], recipient["dpo"], recipient["mailbox"]):
            assert address in content, address
    assert "published_at" in content, "say where the protocol is published"


def test_the_dpo_guide_and_the_readme_link_both_documents() -> None:
    guide = sections(text(DPO_GUIDE))["Documenten"]
    assert "(verwerkers.md)" in guide and "(dpia.md)" in guide
    readme = sections(text(ROOT / "README.md"))["Deployment, Teams app and guides"]
    assert "`docs/verwerkers.md`" in readme and "`docs/dpia.md`" in readme
