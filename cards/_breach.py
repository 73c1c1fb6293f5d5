"""The breach report card (protocol article 9) and the card that answers it.

The form asks what GDPR article 33(3) needs; it says not to name families. The answer shows the
72-hour deadline, the references the bot did not find and what happens next. Neither card shows
what the reporter typed except the form itself, when it comes back with errors to the reporter.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

from bot.core.referral_values import FieldError
from bot.evidence.breach_form import BREACH_ERROR_CODES, BREACH_INPUTS
from bot.evidence.breach_report import BREACH_CATEGORIES, BreachKind
from cards._errors import CardError
from cards._markdown import escape_markdown
from cards._render import Card, format_time, join_names, render
from cards._texts import Language, text

VERB_BREACH_SUBMIT: Final = "breach.submit"
VERB_BREACH_CANCEL: Final = "breach.cancel"
BREACH_VERBS: Final = frozenset({VERB_BREACH_SUBMIT, VERB_BREACH_CANCEL})
#: The text key of each category's label (catalogue keys hold no ':').
_CATEGORY_KEYS: Final[Mapping[str, str]] = MappingProxyType(
    {"identification:name": "name", "contact:address": "address", "contact:phone": "phone",
     "contact:email": "email", "unknown": "unknown"}
)


@dataclass(frozen=True)
class BreachReportedView:
    """What the answer to a breach report shows: ids, times (local), counts; nothing the reporter typed."""

    report_id: str
    recipient: str  # the OCMW of the protocol
    dpos: tuple[str, ...]
    discovered_at: dt.datetime
    deadline: dt.datetime
    deadline_state: Literal["left", "under_hour", "passed"]
    hours: int
    known_references: int
    unknown_references: tuple[str, ...]
    families: int | None  # None: not known
    packages: int | None
    already_reported: bool = False  # a second click on the same card: nothing new was sent


def breach_report_card(
    lang: Language,
    *,
    report_id: str,
    protocols: Sequence[tuple[str, str]],
    today: dt.date,
    values: Mapping[str, str],
    errors: Mapping[str, FieldError],
) -> Card:
    """The form: protocol, kind, when found (date and time), what happened, categories, references,
    consequences, measures taken and proposed; each error right under its input.

    `protocols` are (protocol id, OCMW) the reporter may report under; `values` and `errors` are keyed
    by `BREACH_INPUTS`. The date picker stops at `today`.
    """
    if not protocols:
        raise CardError("breach_report_card needs at least one protocol")
    unknown = set(errors) - set(BREACH_INPUTS)
    if unknown:
        raise CardError(f"breach_report_card: errors for inputs not on this card: {sorted(unknown)}")
    filled: dict[str, Any] = {
        "reportId": report_id,
        "today": today.isoformat(),
        "protocolChoices": [{"title": organisation, "value": protocol_id} for protocol_id, organisation in protocols],
        "kindChoices": [{"title": text(lang, f"breach.kind.{kind.value}"), "value": kind.value} for kind in BreachKind],
        "categoryChoices": [{"title": text(lang, f"breach.category.{_CATEGORY_KEYS[category]}"), "value": category}
                            for category in BREACH_CATEGORIES],
        "summary": _summary(lang, errors),
    }
    for name in BREACH_INPUTS:
        value = values.get(name, "")
        filled[f"value.{name}"] = value if isinstance(value, str) else ""
        error = errors.get(name)
        filled[f"error.{name}"] = "" if error is None else breach_error_text(lang, name, error)
    if not filled["value.protocol"] and len(protocols) == 1:
        filled["value.protocol"] = protocols[0][0]
    return render("breach_report", lang, filled)


def breach_error_text(lang: Language, field: str, error: FieldError) -> str:
    """The sentence for `error` on the input `field`: what is wrong and how to fix it."""
    if error.code not in BREACH_ERROR_CODES:
        raise CardError(f"no text for breach error code {error.code!r}")
    if error.code == "required":
        return text(lang, f"breach.required.{field}")
    if error.code == "too_long":
        return text(lang, "error.too_long", field=text(lang, f"breach.field.{field}.name"), **dict(error.params))
    params = dict(error.params)
    if error.code == "reference_format":  # pieces of what the reporter typed: shown as typed, not as markdown
        params["references"] = escape_markdown(params["references"])
    return text(lang, f"breach.error.{error.code}", **params)


def breach_reported_card(lang: Language, view: BreachReportedView) -> Card:
    """The answer: the report's id, the deadline with the hours left, who gets the mail, and what comes next."""
    if view.deadline_state not in ("left", "under_hour", "passed"):
        raise CardError(f"breach_reported_card: unknown deadline state {view.deadline_state!r}")
    if (view.families is None) != (view.packages is None):
        raise CardError("breach_reported_card: families and packages go together")
    dpos = join_names(lang, list(view.dpos))
    references = (text(lang, "breach.references.none") if not view.known_references and not view.unknown_references
                  else text(lang, "breach.references.count", known=str(view.known_references),
                            unknown=str(len(view.unknown_references))))
    concerned = (text(lang, "breach.concerned.unknown") if view.families is None or view.packages is None
                 else text(lang, "breach.concerned.counted", families=str(view.families),
                           packages=str(view.packages)))
    facts = [
        {"title": text(lang, "breach.fact.report"), "value": view.report_id},
        {"title": text(lang, "breach.fact.protocol"), "value": view.recipient},
        {"title": text(lang, "breach.fact.discovered"), "value": format_time(view.discovered_at)},
        {"title": text(lang, "breach.fact.deadline"),
         "value": text(lang, f"breach.deadline.{view.deadline_state}", time=format_time(view.deadline),
                       hours=str(view.hours))},
        {"title": text(lang, "breach.fact.to"), "value": dpos},
        {"title": text(lang, "breach.fact.references"), "value": references},
        {"title": text(lang, "breach.fact.concerned"), "value": concerned},
    ]
    values: dict[str, Any] = {
        "title": text(lang, "breach.reported.title_again" if view.already_reported else "breach.reported.title"),
        "facts": facts,
        "overdue": text(lang, "breach.reported.overdue") if view.deadline_state == "passed" else "",
        # Well-formed references only (the check refuses anything else): nothing to escape.
        "unknownText": text(lang, "breach.references.unknown", references=", ".join(view.unknown_references))
        if view.unknown_references else "",
        "nextText": text(lang, "breach.reported.next", recipient=view.recipient),
        "meanwhileText": text(lang, "breach.reported.meanwhile", dpos=dpos, report_id=view.report_id),
    }
    return render("breach_reported", lang, values)


def _summary(lang: Language, errors: Mapping[str, FieldError]) -> str:
    names = [text(lang, f"breach.field.{name}.name") for name in BREACH_INPUTS if name in errors]
    return text(lang, "details.errors.summary", fields=join_names(lang, names)) if names else ""
