"""The breach report and its mail: the 72-hour clock in real hours, the article 33(3) fields, both DPOs once,
nothing typed outside the body."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import random
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import pytest

from bot.config import Settings
from bot.core.protocols import load_registry
from bot.evidence.breach_report import (
    REPORT_ID_PATTERN,
    SUPERVISORY_AUTHORITY_URL,
    BreachKind,
    BreachReport,
    Concerned,
    CountBasis,
    ReferenceCheck,
    Reporter,
    build_breach_mail,
    new_report_id,
)
from tests.support.words import forbidden_words

BRUSSELS = ZoneInfo("Europe/Brussels")
TYPED = "De mail over Jozefien Kwakkelstraat ging naar de buren"
[PROTOCOL] = load_registry(Settings().protocols_dir).all()
REPORT = BreachReport(
    report_id="DL-20261128-K7M2QX",
    protocol_id=PROTOCOL.id,
    kind=BreachKind.WRONG_RECIPIENT,
    discovered_at=dt.datetime(2026, 11, 28, 8, 15, tzinfo=BRUSSELS),
    reported_at=dt.datetime(2026, 11, 28, 10, 0, tzinfo=BRUSSELS),
    what_happened=TYPED,
    categories=("identification:name", "contact:address"),
    references=(ReferenceCheck("VD-20261101-AAAAAA", None),),
    concerned=Concerned(CountBasis.NONE, None, None),
    consequences="",
    measures_taken="Buren gebeld",
    measures_proposed="",
    reporter=Reporter("aad-1", "An Verpleeg", "doorverwijzer (Kind en Gezin team X)", "Opgroeien regie"),
)


def mail(report: BreachReport = REPORT) -> EmailMessage:
    built = build_breach_mail(report, PROTOCOL, sender="doorverwijzing@opgroeien.be", timezone=BRUSSELS)
    parsed = email.message_from_bytes(built.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return " ".join(str(part.get_content()).split())


def test_the_deadline_is_72_real_hours_also_across_a_clock_change() -> None:
    before_summer_time = dataclasses.replace(REPORT, discovered_at=dt.datetime(2027, 3, 26, 10, 0, tzinfo=BRUSSELS),
                                             reported_at=dt.datetime(2027, 3, 26, 10, 0, tzinfo=BRUSSELS))
    local = before_summer_time.deadline.astimezone(BRUSSELS)
    assert local == dt.datetime(2027, 3, 29, 11, 0, tzinfo=BRUSSELS), "the night of 28 March has 23 hours"
    assert before_summer_time.deadline - before_summer_time.discovered_at == dt.timedelta(hours=72)


@pytest.mark.parametrize(
    ("since_discovery", "state", "hours"),
    [(dt.timedelta(0), "left", 72), (dt.timedelta(hours=1, minutes=45), "left", 70),
     (dt.timedelta(hours=71), "left", 1), (dt.timedelta(hours=71, minutes=1), "under_hour", 0),
     (dt.timedelta(hours=72), "under_hour", 0), (dt.timedelta(hours=72, seconds=1), "passed", 1),
     (dt.timedelta(hours=97, minutes=30), "passed", 25)],
)
def test_the_clock_at_the_moment_of_reporting(since_discovery: dt.timedelta, state: str, hours: int) -> None:
    report = dataclasses.replace(REPORT, reported_at=REPORT.discovered_at + since_discovery)
    status = report.deadline_status()
    assert (status.state, status.hours) == (state, hours)


def test_the_mail_goes_to_both_dpos_with_every_article_33_field() -> None:
    message = mail()
    assert message["To"] == "dpo@opgroeien.be, informatica@sint-gillis-waas.be"
    assert message["Message-ID"] == "<DL-20261128-K7M2QX@opgroeien.be>"
    text = body(message)
    for field in ("Ontdekt op: 28/11/2026 08:15 (Europe/Brussels)", "Uiterlijk melden: 01/12/2026 08:15",
                  "nog 70 uur op het moment van deze melding", SUPERVISORY_AUTHORITY_URL, "AVG artikel 33(3)(a)",
                  TYPED, "identificatie: naam", "contact: adres", "Aantal betrokkenen en gegevensrecords: niet bekend",
                  "- VD-20261101-AAAAAA: onbekend", "AVG artikel 33(3)(b)", "Melder: An Verpleeg",
                  "Entra object id aad-1",
                  "AVG artikel 33(3)(c)", "(niet ingevuld door de melder: te bekijken door de DPO's)",
                  "AVG artikel 33(3)(d)", "Al genomen: Buren gebeld", "AVG artikel 34"):
        assert field in text, field


def test_the_mail_uses_the_words_of_the_cards() -> None:
    message = mail()
    assert forbidden_words(f"{message['Subject']}\n{body(message)}", "nl") == {}


def test_nothing_the_reporter_typed_is_in_a_header_or_the_report_repr() -> None:
    message = mail(dataclasses.replace(REPORT, consequences="Gevolg-Uniek", measures_proposed="Voorstel-Uniek"))
    headers = "\n".join(f"{name}: {value}" for name, value in message.items())
    for typed in ("Kwakkelstraat", "Buren gebeld", "Gevolg-Uniek", "Voorstel-Uniek"):
        assert typed not in headers
        assert typed in body(message)
    assert "Kwakkelstraat" not in repr(REPORT)


def test_one_dpo_for_both_parties_gets_one_address() -> None:
    same = dataclasses.replace(PROTOCOL, recipient_dpo=PROTOCOL.sender_dpo)
    built = build_breach_mail(REPORT, same, sender="doorverwijzing@opgroeien.be", timezone=BRUSSELS)
    assert built["To"] == "dpo@opgroeien.be"


def test_a_late_report_says_so() -> None:
    late = dataclasses.replace(REPORT, reported_at=REPORT.discovered_at + dt.timedelta(hours=80))
    assert "die termijn was bij deze melding al 8 uur voorbij" in body(mail(late))


def test_report_ids_and_naive_times() -> None:
    report_id = new_report_id(dt.date(2026, 11, 28), random.Random(1))
    assert REPORT_ID_PATTERN.match(report_id) and report_id.startswith("DL-20261128-")
    with pytest.raises(ValueError, match="naive"):
        dataclasses.replace(REPORT, discovered_at=dt.datetime(2026, 11, 28, 8, 15))  # noqa: DTZ001
    with pytest.raises(ValueError, match="categories"):
        dataclasses.replace(REPORT, categories=("health",))
