"""Protocol files: the shipped one loads, bad ones stop the bot naming file and field; reread while it runs."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import Settings
from bot.core.protocols import (
    DEFAULT_RETENTION,
    ProtocolFileError,
    ProtocolFolder,
    load_protocol_file,
    load_registry,
    normalise_place,
)
from bot.core.sent_referrals import ReferralState
from tests.support.bot_process import PROJECT_ROOT

SHIPPED = Settings().protocols_dir


def test_the_shipped_sint_gillis_waas_protocol_loads() -> None:
    registry = load_registry(SHIPPED)
    [protocol] = registry.all()
    assert protocol.recipient_mailbox == "welzijnshuis@sint-gillis-waas.be"
    assert protocol.in_force_from == dt.date(2026, 3, 1) and protocol.ends_on is None
    assert protocol.covers_postal_code("9170") and not protocol.covers_postal_code("9100")
    assert protocol.sender.team == "Kind en Gezin team Noord-Oost Waasland"
    assert (protocol.sender_dpo, protocol.recipient_dpo) == ("dpo@opgroeien.be", "informatica@sint-gillis-waas.be")


def test_the_dpos_entra_object_ids_are_optional_and_compared_in_lower_case(tmp_path: Path) -> None:
    [shipped] = load_registry(SHIPPED).all()
    assert shipped.sender_dpo_object_ids == shipped.recipient_dpo_object_ids == frozenset()
    text = (SHIPPED / "sint-gillis-waas.toml").read_text().replace(
        '"informatica@sint-gillis-waas.be"', '"informatica@sint-gillis-waas.be"\n'
        'dpo_object_ids = ["3F2A6C1E-8B4D-4E5F-9A0B-1C2D3E4F5A6B", "0b8a3c4e-1d2f-4a5b-9c6d-7e8f9a0b1c2d"]')
    (tmp_path / "p.toml").write_text(text)
    protocol = load_protocol_file(tmp_path / "p.toml")
    assert protocol.recipient_dpo_object_ids == {"3f2a6c1e-8b4d-4e5f-9a0b-1c2d3e4f5a6b",
                                                 "0b8a3c4e-1d2f-4a5b-9c6d-7e8f9a0b1c2d"}
    assert protocol.sender_dpo_object_ids == frozenset()


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [("sint gillis waas", "Sint-Gillis-Waas"), ("SINT-GILLIS-WAAS", "Sint-Gillis-Waas"), ("de klinge", "De Klinge"),
     ("  Sint   Pauwels ", "Sint-Pauwels"), ("Sint-Niklaas", None)],
)
def test_a_place_is_known_in_the_protocols_own_spelling(typed: str, canonical: str | None) -> None:
    [protocol] = load_registry(SHIPPED).all()
    assert protocol.places == ("Sint-Gillis-Waas", "De Klinge", "Meerdonk", "Sint-Pauwels"), "file order"
    assert protocol.canonical_place(typed) == canonical
    assert protocol.covers_place(typed) is (canonical is not None)


@pytest.mark.parametrize("dash", ["\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2212", "\u00ad", "\u00a0",
                                  "\u202f", "\ufe63", "\uff0d"])
def test_a_place_typed_with_another_dash_or_space_is_the_same_place(dash: str) -> None:
    """Phones and Word's autocorrect write Sint-Gillis-Waas with a non-breaking hyphen (U+2011), an en dash, ..."""
    [protocol] = load_registry(SHIPPED).all()
    typed = dash.join(["Sint", "Gillis", "Waas"])
    assert protocol.canonical_place(typed) == "Sint-Gillis-Waas"
    assert protocol.covers_place(typed)


@pytest.mark.parametrize("apostrophe", ["\u2019", "\u2018", "\u02bc", "\u2032", "`", "\u00b4"])
def test_a_place_typed_with_a_typographic_apostrophe_is_the_same_place(apostrophe: str) -> None:
    """'s-Gravenwezel, Sint-Job-in-'t-Goor: a phone types the apostrophe as ’ (U+2019)."""
    for place in ("'s-Gravenwezel", "Sint-Job-in-'t-Goor"):
        assert normalise_place(place.replace("'", apostrophe)) == normalise_place(place)
    assert normalise_place("\u2019s\u2011Gravenwezel") == normalise_place("'s-Gravenwezel") == "s gravenwezel"


def test_without_places_the_municipality_is_still_spelled_one_way(tmp_path: Path) -> None:
    text = (SHIPPED / "sint-gillis-waas.toml").read_text()
    (tmp_path / "p.toml").write_text("\n".join(line for line in text.splitlines() if not line.startswith("places")))
    protocol = load_protocol_file(tmp_path / "p.toml")
    assert protocol.places == ()
    assert protocol.canonical_place("sint-gillis waas") == "Sint-Gillis-Waas"
    assert protocol.canonical_place("Elders") is None and protocol.covers_place("Elders")


def test_in_force_window_includes_both_ends(tmp_path: Path) -> None:
    text = (SHIPPED / "sint-gillis-waas.toml").read_text().replace("# ends_on = 2027-03-01", "ends_on = 2027-03-01")
    (tmp_path / "p.toml").write_text(text)
    protocol = load_protocol_file(tmp_path / "p.toml")
    assert not protocol.in_force_on(dt.date(2026, 2, 28))
    assert protocol.in_force_on(dt.date(2026, 3, 1)) and protocol.in_force_on(dt.date(2027, 3, 1))
    assert not protocol.in_force_on(dt.date(2027, 3, 2))


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('mailbox = "welzijnshuis@sint-gillis-waas.be"', 'mailbox = "not an address"', "recipient.mailbox"),
        ('mailbox = "welzijnshuis@sint-gillis-waas.be"', 'mailbox = "wélzijnshuis@sint-gillis-waas.be"',
         "recipient.mailbox"),
        ('dpo = "dpo@opgroeien.be"', 'dpo = "dpö@opgroeien.be"', "sender.dpo"),
        ('dpo = "informatica@sint-gillis-waas.be"', 'dpo = "ïnformatica@sint-gillis-waas.be"', "recipient.dpo"),
        ('postal_codes = ["9170"]', 'postal_codes = ["91700"]', "recipient.postal_codes"),
        ('postal_codes = ["9170"]', "postal_codes = []", "recipient.postal_codes"),
        ("in_force_from = 2026-03-01", 'in_force_from = "1 maart"', "in_force_from"),
        ("in_force_from = 2026-03-01", "", "in_force_from"),
        ("# ends_on = 2027-03-01", "ends_on = 2025-01-01", "ends_on"),
        ('id = "OR-KG-NOW-OCMW-SGW-2026"', 'id = "bad id!"', "id"),
        ('dpo = "dpo@opgroeien.be"', "", "sender.dpo"),
        ('dpo = "dpo@opgroeien.be"', 'dpo = "dpo@opgroeien.be"\ndpo_object_ids = ["An Dpo"]', "sender.dpo_object_ids"),
        ('dpo = "informatica@sint-gillis-waas.be"', 'dpo = "x@y.be"\ndpo_object_ids = "3f2a6c1e"',
         "recipient.dpo_object_ids"),
        ('zip_password_secret = "zip-password-ocmw-sint-gillis-waas"', 'zip_password_secret = "a b"',
         "zip_password_secret"),
        ("[sender]", "[sender", "(syntax)"),
    ],
)
def test_a_bad_file_names_file_and_field(tmp_path: Path, old: str, new: str, field: str) -> None:
    text = (SHIPPED / "sint-gillis-waas.toml").read_text()
    assert old in text
    path = tmp_path / "broken.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ProtocolFileError) as raised:
        load_registry(tmp_path)
    assert raised.value.field == field
    assert "broken.toml" in str(raised.value) and field in str(raised.value)



@pytest.mark.parametrize(
    ("old", "new", "field", "allowed"),
    [
        ('mailbox = "welzijnshuis@sint-gillis-waas.be"',
         'mailbox = "welzijnshuis@sint-gillis-waas.be"\nmailbx = "oud@sint-gillis-waas.be"',
         "recipient.mailbx", "dpo, dpo_object_ids, mailbox, municipality, organisation, places, postal_codes, team"),
        ('dpo = "dpo@opgroeien.be"',
         'dpo = "dpo@opgroeien.be"\ndpo_objectids = ["7d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"]',
         "sender.dpo_objectids", "dpo, dpo_object_ids, organisation, team, teams"),
        ("# ends_on = 2027-03-01", "end_on = 2027-03-01", "end_on",
         "ends_on, id, in_force_from, published_at, recipient, retention, sender, title, zip_password_secret"),
        ("[retention]", "[rentention]", "rentention",
         "ends_on, id, in_force_from, published_at, recipient, retention, sender, title, zip_password_secret"),
        ("register_years = 5", "register_year = 5", "retention.register_year",
         "closed_states, pairing_code_days, referral_days_after_closure, register_years, tombstone_days"),
    ],
    ids=["recipient.mailbx", "sender.dpo_objectids", "end_on", "a misspelt table", "retention.register_year"],
)
def test_an_unknown_key_is_refused_naming_it_and_the_keys_allowed_there(
    tmp_path: Path, old: str, new: str, field: str, allowed: str
) -> None:
    """A typo must not load as if the field were left out: the DPO would think it is set."""
    text = (SHIPPED / "sint-gillis-waas.toml").read_text()
    assert old in text
    (tmp_path / "typo.toml").write_text(text.replace(old, new, 1))
    with pytest.raises(ProtocolFileError) as raised:
        load_registry(tmp_path)
    assert raised.value.field == field, str(raised.value)
    assert "typo.toml" in str(raised.value) and "not a known key" in str(raised.value)
    assert allowed in str(raised.value)


def test_several_unknown_keys_are_named_together(tmp_path: Path) -> None:
    text = (SHIPPED / "sint-gillis-waas.toml").read_text()
    typos = '[recipient]\nmailbx = "a@b.be"\npostcodes = ["9170"]'
    (tmp_path / "p.toml").write_text(text.replace("[recipient]", typos))
    with pytest.raises(ProtocolFileError) as raised:
        load_registry(tmp_path)
    assert "recipient.mailbx" in str(raised.value) and "recipient.postcodes" in str(raised.value)


def test_every_key_the_documentation_names_loads(tmp_path: Path) -> None:
    """The shipped file with every optional key filled in, its example team uncommented, still loads."""
    text = (SHIPPED / "sint-gillis-waas.toml").read_text()
    text = text.replace("# ends_on = 2027-03-01", "ends_on = 2027-03-01")
    text = text.replace("# published_at = \"https://…\"", "published_at = \"https://www.opgroeien.be/protocol\"")
    text = text.replace("# dpo_object_ids = [\"<Entra object id>\"]", f"dpo_object_ids = [\"{DPO_ID}\"]")
    lines = text.splitlines()
    start = lines.index("# [[sender.teams]]")
    example = [line.removeprefix("# ") for line in lines[start:start + 5]]
    text = "\n".join([*lines[:start], *example, *lines[start + 5:]]) + "\n"
    (tmp_path / "p.toml").write_text(text)
    protocol = load_protocol_file(tmp_path / "p.toml")
    assert protocol.published_at and protocol.ends_on and protocol.sender_dpo_object_ids and protocol.sender_teams
    assert protocol.recipient_dpo_object_ids and protocol.places


def test_an_address_with_a_non_ascii_domain_is_kept_in_its_ascii_form(tmp_path: Path) -> None:
    """The IDNA form (xn--) is what the SMTP envelope and the To header can carry without SMTPUTF8 or RFC 2047."""
    text = (SHIPPED / "sint-gillis-waas.toml").read_text().replace("@sint-gillis-waas.be", "@sint-gillis-waäs.be")
    (tmp_path / "p.toml").write_text(text.replace('"dpo@opgroeien.be"', '"dpo@öpgroeien.be"'), encoding="utf-8")

    protocol = load_protocol_file(tmp_path / "p.toml")

    assert protocol.recipient_mailbox == "welzijnshuis@xn--sint-gillis-was-elb.be"
    assert protocol.recipient_dpo == "informatica@xn--sint-gillis-was-elb.be"
    assert protocol.sender_dpo == "dpo@xn--pgroeien-m4a.be"


def test_a_non_ascii_local_part_is_refused_saying_why(tmp_path: Path) -> None:
    text = (SHIPPED / "sint-gillis-waas.toml").read_text()
    (tmp_path / "p.toml").write_text(text.replace('mailbox = "welzijnshuis@', 'mailbox = "wélzijnshuis@'),
                                     encoding="utf-8")

    with pytest.raises(ProtocolFileError) as raised:
        load_protocol_file(tmp_path / "p.toml")

    assert raised.value.field == "recipient.mailbox"
    assert "before the @" in str(raised.value) and "SMTPUTF8" in str(raised.value)

PUBLISHED_LINE = "# published_at = "


def test_the_publication_address_is_optional_and_https(tmp_path: Path) -> None:
    assert load_registry(SHIPPED).all()[0].published_at == "", "the shipped file does not know the address yet"
    text = (SHIPPED / "sint-gillis-waas.toml").read_text()
    assert PUBLISHED_LINE in text
    url = "https://www.opgroeien.be/protocollen/OR-KG-NOW-OCMW-SGW-2026.pdf"
    (tmp_path / "p.toml").write_text(text.replace(PUBLISHED_LINE, f'published_at = "{url}"  # ', 1))
    assert load_protocol_file(tmp_path / "p.toml").published_at == url


@pytest.mark.parametrize("value", ['"http://www.opgroeien.be/protocol"', '"www.opgroeien.be"', '""', "2026-03-01",
                                   '"https://user:pw@example.be/x"', '"https://"', '"https://example.be/a b"',
                                   '"javascript:alert(1)"'])
def test_a_bad_publication_address_names_the_field(tmp_path: Path, value: str) -> None:
    text = (SHIPPED / "sint-gillis-waas.toml").read_text()
    (tmp_path / "p.toml").write_text(text.replace(PUBLISHED_LINE, f"published_at = {value}  # ", 1))
    with pytest.raises(ProtocolFileError) as raised:
        load_protocol_file(tmp_path / "p.toml")
    assert raised.value.field == "published_at"


def test_two_files_with_one_id_are_refused(tmp_path: Path) -> None:
    text = (SHIPPED / "sint-gillis-waas.toml").read_text()
    (tmp_path / "a.toml").write_text(text)
    (tmp_path / "b.toml").write_text(text)
    with pytest.raises(ProtocolFileError, match="another file"):
        load_registry(tmp_path)


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProtocolFileError, match=r"no \*\.toml"):
        load_registry(tmp_path)


# --- [retention] ---------------------------------------------------------------------------------

def _file_with(tmp_path: Path, *, replace: tuple[str, str] = ("", ""), append: str = "") -> Path:
    """The shipped file without its [retention] table, with `append` instead and `replace` done."""
    text = (SHIPPED / "sint-gillis-waas.toml").read_text().split("\n[retention]", 1)[0] + "\n" + append
    if replace[0]:
        assert replace[0] in text
        text = text.replace(*replace, 1)
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def test_the_shipped_file_states_the_default_retention_periods() -> None:
    [protocol] = load_registry(SHIPPED).all()
    assert protocol.retention == DEFAULT_RETENTION
    assert DEFAULT_RETENTION.closed_states == {ReferralState.DATA_DELETED, ReferralState.FAILED}
    assert (DEFAULT_RETENTION.referral_days_after_closure, DEFAULT_RETENTION.register_years,
            DEFAULT_RETENTION.pairing_code_days, DEFAULT_RETENTION.tombstone_days) == (90, 5, 7, 7)


def test_without_a_retention_table_the_defaults_apply(tmp_path: Path) -> None:
    assert load_protocol_file(_file_with(tmp_path)).retention == DEFAULT_RETENTION


def test_a_retention_table_sets_each_period(tmp_path: Path) -> None:
    path = _file_with(tmp_path, append='[retention]\nreferral_days_after_closure = 30\nregister_years = 10\n'
                                       'closed_states = ["data_deleted", "failed"]\n')
    retention = load_protocol_file(path).retention
    assert (retention.referral_days_after_closure, retention.register_years) == (30, 10)
    assert retention.closed_states == {ReferralState.DATA_DELETED, ReferralState.FAILED}
    assert (retention.pairing_code_days, retention.tombstone_days) == (7, 7), "what is left out keeps its default"


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("register_years = 0", "retention.register_years"),
        ("register_years = 31", "retention.register_years"),
        ('tombstone_days = "7"', "retention.tombstone_days"),
        ("pairing_code_days = true", "retention.pairing_code_days"),
        ("referral_days_after_closure = 1.5", "retention.referral_days_after_closure"),
        ('closed_states = ["data_deleted", "no_help_wanted"]', "retention.closed_states"),
        ('closed_states = ["sent"]', "retention.closed_states"),
        ("closed_states = []", "retention.closed_states"),
    ],
)
def test_a_bad_retention_value_names_the_field(tmp_path: Path, line: str, field: str) -> None:
    _file_with(tmp_path, append=f"[retention]\n{line}\n")
    with pytest.raises(ProtocolFileError) as raised:
        load_registry(tmp_path)
    assert raised.value.field == field and "p.toml" in str(raised.value)


# --- ends_on and the last month ----------------------------------------------------------------

@pytest.mark.parametrize(
    ("ends_on", "first_notice_day"),
    [(dt.date(2027, 8, 31), dt.date(2027, 8, 1)), (dt.date(2027, 3, 31), dt.date(2027, 3, 1)),
     (dt.date(2027, 1, 15), dt.date(2026, 12, 16))],
)
def test_the_ending_notice_covers_the_last_month_up_to_the_last_day(
    tmp_path: Path, ends_on: dt.date, first_notice_day: dt.date
) -> None:
    protocol = load_protocol_file(_file_with(tmp_path, replace=("# ends_on = 2027-03-01", f"ends_on = {ends_on}")))
    assert not protocol.ending_notice_on(first_notice_day - dt.timedelta(days=1))
    assert protocol.ending_notice_on(first_notice_day) and protocol.ending_notice_on(ends_on)
    assert protocol.in_force_on(ends_on) and not protocol.in_force_on(ends_on + dt.timedelta(days=1))
    assert not protocol.ending_notice_on(ends_on + dt.timedelta(days=1))


def test_no_notice_without_an_end_date() -> None:
    [protocol] = load_registry(SHIPPED).all()
    assert not protocol.ending_notice_on(dt.date(2030, 1, 1))


# --- the folder reread while the bot runs -------------------------------------------------------

def _folder(tmp_path: Path) -> tuple[Path, ProtocolFolder]:
    directory = tmp_path / "protocols"
    directory.mkdir()
    shutil.copy(SHIPPED / "sint-gillis-waas.toml", directory / "sint-gillis-waas.toml")
    return directory / "sint-gillis-waas.toml", ProtocolFolder(directory)


def test_an_unchanged_folder_is_not_read_again(tmp_path: Path) -> None:
    _, folder = _folder(tmp_path)
    assert folder.reload_if_changed() is False and folder.problem is None


def test_a_changed_file_is_reread_into_the_same_registry(tmp_path: Path) -> None:
    path, folder = _folder(tmp_path)
    registry = folder.registry
    path.write_text(path.read_text().replace("# ends_on = 2027-03-01", "ends_on = 2026-11-27"))
    assert folder.reload_if_changed() is True
    assert folder.registry is registry, "every service holds this object"
    [protocol] = registry.all()
    assert protocol.ends_on == dt.date(2026, 11, 27) and not registry.in_force_on(dt.date(2026, 11, 28))


def test_a_bad_change_keeps_the_protocols_read_before(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, folder = _folder(tmp_path)
    good = path.read_text()
    path.write_text(good.replace('mailbox = "welzijnshuis@sint-gillis-waas.be"', 'mailbox = "welzijnshuis"'))
    with caplog.at_level(logging.ERROR, logger="bot.core.protocols"):
        assert folder.reload_if_changed() is False
    [protocol] = folder.registry.all()
    assert protocol.recipient_mailbox == "welzijnshuis@sint-gillis-waas.be"
    assert folder.problem is not None and folder.problem.field == "recipient.mailbox"
    [record] = caplog.records
    assert "sint-gillis-waas.toml" in record.getMessage() and "recipient.mailbox" in record.getMessage()
    assert folder.reload_if_changed() is False and len(caplog.records) == 1, "logged once per change"
    path.write_text(good)
    assert folder.reload_if_changed() is True and folder.problem is None


def test_a_removed_file_takes_its_protocol_away_but_not_its_name(tmp_path: Path) -> None:
    path, folder = _folder(tmp_path)
    shutil.copy(path, path.with_name("copy.toml"))
    text = path.read_text().replace('id = "OR-KG-NOW-OCMW-SGW-2026"', 'id = "OTHER-2026"')
    path.with_name("copy.toml").write_text(text)
    assert folder.reload_if_changed() is True and len(folder.registry) == 2
    path.unlink()
    assert folder.reload_if_changed() is True
    assert folder.registry.get("OR-KG-NOW-OCMW-SGW-2026") is None
    assert folder.registry.recipient_name("OR-KG-NOW-OCMW-SGW-2026") == "OCMW Sint-Gillis-Waas"
    assert folder.registry.retention_for("OR-KG-NOW-OCMW-SGW-2026") == DEFAULT_RETENTION


def test_an_emptied_folder_keeps_the_protocols_read_before(tmp_path: Path) -> None:
    path, folder = _folder(tmp_path)
    path.unlink()
    assert folder.reload_if_changed() is False
    assert len(folder.registry) == 1 and folder.problem is not None


def _protocols_check(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", "protocols", "check", "--dir", str(directory)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_protocols_check_prints_each_protocol_or_names_file_and_field(tmp_path: Path) -> None:
    done = _protocols_check(SHIPPED)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK   OR-KG-NOW-OCMW-SGW-2026")
    assert "no end date" in done.stdout and "register 5 years" in done.stdout
    _file_with(tmp_path, append="[retention]\nregister_years = 0\n")
    done = _protocols_check(tmp_path)
    assert done.returncode == 1
    assert done.stdout.startswith("FAIL") and "p.toml" in done.stdout and "retention.register_years" in done.stdout


# --- the DPOs' Entra object ids -------------------------------------------------------------------

DPO_ID = "7d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"


def test_the_dpos_object_ids_of_both_sides_are_read_lower_case(tmp_path: Path) -> None:
    text = (SHIPPED / "sint-gillis-waas.toml").read_text()
    text = text.replace('dpo = "dpo@opgroeien.be"', f'dpo = "dpo@opgroeien.be"\ndpo_object_ids = ["{DPO_ID.upper()}"]')
    text = text.replace('dpo = "informatica@sint-gillis-waas.be"',
                        'dpo = "informatica@sint-gillis-waas.be"\n'
                        'dpo_object_ids = ["0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"]')
    (tmp_path / "p.toml").write_text(text)
    [protocol] = load_registry(tmp_path).all()
    assert protocol.dpo_object_ids == {DPO_ID, "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"}
    assert load_registry(SHIPPED).all()[0].dpo_object_ids == frozenset(), "none named: nobody gets the register"


@pytest.mark.parametrize("value", ['["dpo@opgroeien.be"]', f'"{DPO_ID}"', "[]", f'["{DPO_ID}", 3]'])
def test_a_dpo_object_id_that_is_no_guid_names_the_field(tmp_path: Path, value: str) -> None:
    text = (SHIPPED / "sint-gillis-waas.toml").read_text()
    (tmp_path / "p.toml").write_text(text.replace('dpo = "informatica@sint-gillis-waas.be"',
                                                  f'dpo = "informatica@sint-gillis-waas.be"\ndpo_object_ids = {value}'))
    with pytest.raises(ProtocolFileError) as raised:
        load_registry(tmp_path)
    assert raised.value.field == "recipient.dpo_object_ids"


#: A referrer's, a group's and a team's Entra ids (any GUIDs; upper case as Entra's portal shows them).
USER_ID, GROUP_ID, TEAM_ID = ("5C0FFEE0-0000-4000-8000-00000000A001", "6a7b8c9d-0000-4000-8000-0000000000b1",
                              "6a7b8c9d-0000-4000-8000-0000000000c1")


def test_sender_teams_are_read_in_file_order_with_their_ids(tmp_path: Path) -> None:
    path = _file_with(tmp_path, append=f'[[sender.teams]]\nname = " Team A "\nobject_ids = ["{USER_ID}"]\n\n'
                                       f'[[sender.teams]]\nname = "Team B"\ngroup_ids = ["{GROUP_ID}"]\n'
                                       f'team_ids = ["{TEAM_ID}"]\n')
    first, second = load_protocol_file(path).sender_teams
    assert first.name == "Team A" and first.object_ids == {USER_ID.lower()} and not first.directory_groups
    assert second.name == "Team B" and not second.object_ids and second.directory_groups == {GROUP_ID, TEAM_ID}


def test_a_protocol_sent_by_a_team_names_that_team_and_nothing_else_changes() -> None:
    [protocol] = load_registry(SHIPPED).all()
    sent = protocol.sent_by("Kind en Gezin team Beveren")
    assert sent.sender.team == "Kind en Gezin team Beveren" and sent.sender.organisation == "Opgroeien regie"
    assert sent.id == protocol.id and sent.zip_password_secret == protocol.zip_password_secret


@pytest.mark.parametrize(
    ("entries", "field"),
    [
        (f'[[sender.teams]]\nname = "A"\nobjectids = ["{USER_ID}"]\n', "sender.teams[1].objectids"),
        ('[[sender.teams]]\nname = "A"\nobject_ids = ["jan@opgroeien.be"]\n', "sender.teams[1].object_ids"),
        ('[[sender.teams]]\nname = "A"\ngroup_ids = "6a7b8c9d-0000-4000-8000-0000000000b1"\n',
         "sender.teams[1].group_ids"),
        ('[[sender.teams]]\nname = "A"\nteam_ids = []\n', "sender.teams[1]"),
        (f'[[sender.teams]]\nobject_ids = ["{USER_ID}"]\n', "sender.teams[1].name"),
        (f'[[sender.teams]]\nname = "A\\nB"\nobject_ids = ["{USER_ID}"]\n', "sender.teams[1].name"),
        (f'[[sender.teams]]\nname = "A"\nobject_ids = ["{USER_ID}"]\n[[sender.teams]]\nname = "A"\n'
         f'group_ids = ["{GROUP_ID}"]\n', "sender.teams[2].name"),
    ],
    ids=["unknown key", "not a GUID", "not a list", "lists nobody", "no name", "two-line name", "same name twice"],
)
def test_a_bad_sender_team_names_the_entry_and_field(tmp_path: Path, entries: str, field: str) -> None:
    with pytest.raises(ProtocolFileError) as raised:
        load_protocol_file(_file_with(tmp_path, append=entries))
    assert raised.value.field == field, str(raised.value)


def test_teams_written_as_a_plain_list_are_refused(tmp_path: Path) -> None:
    path = _file_with(tmp_path, replace=('dpo = "dpo@opgroeien.be"', 'teams = ["Team A"]\ndpo = "dpo@opgroeien.be"'))
    with pytest.raises(ProtocolFileError) as raised:
        load_protocol_file(path)
    assert raised.value.field == "sender.teams" and "[[sender.teams]]" in str(raised.value)


def test_the_shipped_example_entry_loads_once_uncommented_and_production_refuses_its_placeholders(
    tmp_path: Path,
) -> None:
    lines = (SHIPPED / "sint-gillis-waas.toml").read_text().splitlines()
    start = lines.index("# [[sender.teams]]")
    example = [line.removeprefix("# ") for line in lines[start:start + 5]]
    directory = tmp_path / "protocols"
    directory.mkdir()
    (directory / "p.toml").write_text("\n".join([*lines[:start], *example, *lines[start + 5:]]) + "\n")

    [protocol] = load_registry(directory).all()
    [team] = protocol.sender_teams
    assert team.name == protocol.sender.team and team.object_ids and team.group_ids and team.team_ids
    with pytest.raises(ProtocolFileError) as raised:
        load_registry(directory, require_referrers=True)
    assert raised.value.field == "sender.teams[1].object_ids" and "placeholder" in str(raised.value)


def test_production_refuses_the_shipped_file_until_it_lists_who_may_refer() -> None:
    with pytest.raises(ProtocolFileError) as raised:
        load_registry(SHIPPED, require_referrers=True)
    assert raised.value.field == "sender.teams" and raised.value.path.name == "sint-gillis-waas.toml"
    assert load_registry(SHIPPED).all()[0].sender_teams == ()
