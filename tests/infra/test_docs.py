"""The guides and the deployment guide: pictures that exist, facts that match the protocol files."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

import cards
from bot.config import Settings
from bot.referral.package import encrypted_zip
from bot.secrets.zip_passwords import format_for_reading, generate_password
from infra.card_gallery import samples
from tests.infra.helpers import ROOT
from tests.support import sevenzip

DOCS = ROOT / "docs"
GUIDES = [DOCS / "handleiding-kind-en-gezin.md", DOCS / "handleiding-ocmw.md"]
DEPLOYMENT = ROOT / "infra" / "README.md"
PROTOCOL_FILES = sorted((ROOT / "infra" / "protocols").glob("*.toml"))
PROTOCOLS = [tomllib.loads(path.read_text(encoding="utf-8")) for path in PROTOCOL_FILES]
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]+)\)")


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("guide", GUIDES, ids=[g.name for g in GUIDES])
def test_every_picture_in_a_guide_exists_and_has_a_description(guide: Path) -> None:
    pictures = IMAGE.findall(text(guide))
    assert pictures
    for description, target in pictures:
        assert (guide.parent / target).is_file(), target
        assert len(description) > 10, f"{target} needs alt text that says what it shows"


def test_the_guides_show_every_dutch_guide_screenshot() -> None:
    shown = {Path(target).name for guide in GUIDES for _, target in IMAGE.findall(text(guide))}
    wanted = {sample.file_name("nl") for sample in samples() if sample.in_docs}
    assert wanted <= shown, "a screenshot made for the guides is not used in them"


def test_the_kind_en_gezin_guide_covers_the_four_points_consent_and_follow_up() -> None:
    guide = text(GUIDES[0])
    for heading in (
        cards.text("nl", "consent.data.heading"),
        cards.text("nl", "consent.recipient.heading"),
        cards.text("nl", "consent.purpose.heading"),
        cards.text("nl", "consent.follow_up.heading"),
    ):
        assert heading in guide
    for words in ("toestemming", "intrekken", "`nieuw`", "`status`", "`hulp`", "artikel 7", "referentie"):
        assert words in guide, words
    for label in ("action.send", "action.edit", "action.cancel", "action.withdraw_consent",
                  "action.correction_submit", "action.later"):
        assert cards.text("nl", label) in guide, label


def test_the_kind_en_gezin_guide_quotes_what_the_card_reads_aloud_word_for_word() -> None:
    flat = " ".join(text(GUIDES[0]).replace("**", "").split())
    said = [cards.text("nl", f"consent.{key}") for key in ("data.text", "recipient.network", "purpose.text",
                                                           "follow_up.text", "rights.text", "complaint.text",
                                                           "consent.text")]
    said.append(cards.text("nl", "consent.recipient.text_one", ocmw="OCMW Sint-Gillis-Waas"))
    for sentence in said:
        assert sentence in flat, sentence
    for protocol in PROTOCOLS:
        assert protocol["sender"]["dpo"] in flat and protocol["recipient"]["dpo"] in flat
    assert cards.text("nl", "consent.sheet.button") in flat and "niets mis" not in flat


def test_the_ocmw_guide_covers_7zip_the_password_outcomes_deletion_and_breaches() -> None:
    guide = text(GUIDES[1])
    for words in ("7-Zip", "Windows Verkenner", "sleutelversie", "<referentie>.zip", "artikel 7", "artikel 9",
                  "koppel <code>"):
        assert words in guide, words
    for label in ("action.acknowledge", "action.data_wrong", "action.data_deleted", "ocmw.quality.label"):
        assert cards.text("nl", label) in guide, label
    for outcome in cards.OUTCOMES:
        assert cards.text("nl", f"outcome.{outcome}") in guide, outcome


def section(path: Path, heading: str) -> str:
    """The text under `heading` up to the next heading of any level, on one line."""
    after = text(path).split(heading, 1)[1]
    return " ".join(re.split(r"\n#+ ", after, maxsplit=1)[0].replace("**", "").split())


def test_the_guides_say_the_zip_password_is_typed_without_the_spaces_it_is_read_out_with(tmp_path: Path) -> None:
    """The password is read out in groups of four; 7-Zip opens the package only with it typed as one block."""
    password = generate_password()
    package = encrypted_zip({"doorverwijzing.txt": b"-"}, password.encode("ascii"))
    assert sevenzip.extract(package, password, tmp_path / "whole").returncode == 0
    refused = sevenzip.extract(package, format_for_reading(password), tmp_path / "grouped")
    assert refused.returncode != 0 and "Wrong password" in refused.stdout + refused.stderr
    assert sevenzip.extract(package, password.lower(), tmp_path / "lower").returncode != 0

    ocmw = section(GUIDES[1], "## Het wachtwoord en de sleutelversie")
    assert "groepjes van vier" in ocmw and "zonder spaties" in ocmw, ocmw
    assert "hoofdletters" in ocmw, "the letters are capitals: 7-Zip tells k7m2 from K7M2"
    opening = section(GUIDES[1], "## De bijlage openen met 7-Zip")
    assert "zonder spaties" in opening, opening
    for heading in ("## 6. The ZIP password of each protocol in Key Vault",
                    "### Rotate the ZIP password of a protocol (and tell the OCMW)"):
        deployment = section(DEPLOYMENT, heading)
        assert "groups of four" in deployment and "without the spaces" in deployment, heading


def test_the_guides_say_what_users_see_when_a_protocol_ends() -> None:
    notice = cards.text("nl", "consent.ending", ocmw="OCMW …", date="…").split(" Daarna")[0]
    stopped = cards.text("nl", "problem.protocol_ended.title", ocmw="OCMW …")
    for guide in (GUIDES[0], DOCS / "handleiding-dpo.md"):
        flat = " ".join(text(guide).replace("**", "").replace('"', "").split())
        assert notice.rstrip(".") in flat and stopped in flat, guide.name
    assert "artikel 11" in text(GUIDES[1]) and "tot en met die dag" in text(GUIDES[1]).lower()


def test_the_guides_name_the_dpos_and_mailboxes_of_the_protocols() -> None:
    ocmw_guide = text(GUIDES[1])
    for protocol in PROTOCOLS:
        assert protocol["sender"]["dpo"] in ocmw_guide
        assert protocol["recipient"]["dpo"] in ocmw_guide
        assert protocol["recipient"]["mailbox"] in ocmw_guide
        assert protocol["sender"]["dpo"] in text(GUIDES[0])


def test_the_deployment_guide_covers_identity_mail_secrets_teams_and_linking() -> None:
    guide = text(DEPLOYMENT)
    for words in ("single-tenant", "Mail.Send", "New-ApplicationAccessPolicy", "zip_password_secret",
                  "python -m bot check", "python -m bot link-ocmw", "koppel", "make package", "groups of four",
                  "key version", "KEY_VAULT_CACHE_MINUTES"):
        assert words in guide, words
    for protocol in PROTOCOLS:
        assert protocol["zip_password_secret"] in guide
        assert protocol["id"] in guide


def test_the_deployment_guide_covers_postgresql_the_bots_role_and_the_move_from_sqlite() -> None:
    guide = text(DEPLOYMENT)
    flat = " ".join(guide.split())
    for words in ("python -m bot migrate", "python -m bot migrate --from-sqlite", "pgaadauth_create_principal",
                  "GRANT USAGE, CREATE ON SCHEMA public", "DATABASE_AUTH=entra", "sslmode=verify-full",
                  "log_statement=ddl", "not in Burstable", "AllowAllAzureServicesAndResourcesWithinAzureIps",
                  "until the DPO agrees it can be destroyed", "Private PostgreSQL"):
        assert words in flat, words
    sqlite_file = Settings.from_mapping({"BOT_DATA_DIR": "/home/data"}).database_path
    assert f"`{sqlite_file}`" in guide, "the migration note names the file the old deployments wrote"
    assert "one instance**" not in guide and "Do not scale the plan out" not in guide


@pytest.mark.parametrize("guide", [*GUIDES, DOCS / "handleiding-dpo.md"], ids=lambda path: path.name)
def test_a_guide_uses_the_words_of_the_bot(guide: Path) -> None:
    # Issue 12 §6: one verb for sending, no "afgeleverd" for what the mail system accepted, who helps by name.
    found = re.findall(r"\b(verzond\w*|afgeleverd|achternaam|support|cliënt\w*)\b", text(guide), re.IGNORECASE)
    assert found == []


def test_the_kind_en_gezin_guide_names_states_commands_and_refusals_as_the_bot_does() -> None:
    flat = " ".join(text(GUIDES[0]).replace("**", "").split())
    for state in cards.STATUS_STATES:
        assert f"| {cards.text('nl', f'status.state.{state}')} |" in flat, state
    for command in ("`nieuw`", "`hulp`", "`status`", "`verbeter VD-…`", "`intrekken VD-…`", "`datalek`"):
        assert command in flat, command
    for problem in ("correction_withdrawn", "correction_closed", "correction_not_sent"):
        assert cards.text("nl", f"problem.{problem}.title") in flat, problem


def test_the_dpo_guide_explains_the_register_export_in_teams_with_the_cards_words() -> None:
    """Issue 12 §3: a DPO gets the register without shell access; the guide must say how, in the bot's words."""
    labels = json.loads((ROOT / "cards" / "texts" / "nl.json").read_text(encoding="utf-8"))
    flat = " ".join(text(DOCS / "handleiding-dpo.md").replace("**", "").split())
    assert "typ dan `register`" in flat
    assert labels["register.download_csv"] in flat and labels["register.download_json"] in flat
    assert "dpo_object_ids" in flat and "één keer" in flat and "15 minuten" in flat
