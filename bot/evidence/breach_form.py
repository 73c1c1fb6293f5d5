"""The breach report card's inputs, checked: what the reporter typed becomes a `BreachForm`, or errors per field.

Plain Python, no I/O. Every wrong field gets its error in the same answer, as on the data card (the same
`FieldError` shape, with the codes of `BREACH_ERROR_CODES`). The
free texts are kept as typed (control characters dropped) and never put in a log line: `repr` is
off on everything that holds them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from bot.core.reference import is_reference
from bot.core.referral_values import FieldError
from bot.evidence.breach_report import BREACH_CATEGORIES, BreachKind

#: The card's inputs, in card order.
BREACH_INPUTS: tuple[str, ...] = ("protocol", "kind", "discoveredDate", "discoveredTime", "whatHappened",
                                  "categories", "references", "consequences", "measuresTaken", "measuresProposed")
#: The inputs a report cannot go without (the consequences and measures may still be unknown: article 33(4)).
REQUIRED_INPUTS = frozenset({"protocol", "kind", "discoveredDate", "discoveredTime", "whatHappened", "categories"})
#: The free-text inputs with their `maxLength` (one source for the card and the check).
TEXT_MAX_LENGTHS: Mapping[str, int] = MappingProxyType(
    {"whatHappened": 2000, "references": 1100, "consequences": 1000, "measuresTaken": 1000,
     "measuresProposed": 1000}
)
MAX_REFERENCES = 50
#: A reporter's clock a few minutes ahead of the bot's is not "the future".
FUTURE_TOLERANCE = dt.timedelta(minutes=5)
#: Every `FieldError.code` this check gives (the card has a sentence for each).
BREACH_ERROR_CODES: tuple[str, ...] = ("required", "too_long", "date_format", "time_format", "in_future",
                                       "reference_format", "too_many_references")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_TIME = re.compile(r"^[0-9]{1,2}:[0-9]{2}(?::[0-9]{2})?$")
_SEPARATORS = re.compile(r"[\s,;]+")


@dataclass(frozen=True, repr=False)
class BreachForm:
    """A checked breach report card; the free texts as typed. `repr` is off: they may hold a name."""

    protocol_id: str
    kind: BreachKind
    discovered_at: dt.datetime
    what_happened: str
    categories: tuple[str, ...]
    references: tuple[str, ...]
    consequences: str
    measures_taken: str
    measures_proposed: str


@dataclass(frozen=True, repr=False)
class FormResult:
    """The form when every field is right; else what was typed (to show again) and an error per wrong field."""

    form: BreachForm | None
    typed: Mapping[str, str]
    errors: Mapping[str, FieldError]


def validate_breach_form(
    data: Mapping[str, Any], *, protocol_ids: Collection[str], now: dt.datetime, timezone: ZoneInfo
) -> FormResult:
    """Check the card's `data` for a report under one of `protocol_ids`; `now` is when it is submitted."""
    typed = {name: _typed(data.get(name), TEXT_MAX_LENGTHS.get(name, 200)) for name in BREACH_INPUTS}
    if not typed["protocol"] and len(protocol_ids) == 1:
        typed["protocol"] = next(iter(protocol_ids))
    errors: dict[str, FieldError] = {}
    for name in REQUIRED_INPUTS:
        if not typed[name].strip():
            errors[name] = FieldError("required")
    for name, limit in TEXT_MAX_LENGTHS.items():
        if len(typed[name]) > limit:
            errors[name] = FieldError("too_long", (("max", str(limit)),))
    if typed["protocol"] and typed["protocol"] not in protocol_ids:
        errors["protocol"] = FieldError("required")
    kind = typed["kind"] if typed["kind"] in {member.value for member in BreachKind} else None
    if kind is None:
        errors["kind"] = FieldError("required")
    categories = _categories(typed["categories"])
    if not categories:
        errors["categories"] = FieldError("required")
    discovered_at = _discovered_at(typed, now, timezone, errors)
    references, malformed = parse_references(typed["references"])
    if malformed and "references" not in errors:
        shown = ", ".join(token[:30] for token in malformed[:5])
        errors["references"] = FieldError("reference_format", (("references", shown),))
    elif len(references) > MAX_REFERENCES and "references" not in errors:
        errors["references"] = FieldError("too_many_references", (("max", str(MAX_REFERENCES)),))
    if errors or kind is None or discovered_at is None:
        return FormResult(None, MappingProxyType(typed), MappingProxyType(errors))
    form = BreachForm(
        protocol_id=typed["protocol"],
        kind=BreachKind(kind),
        discovered_at=discovered_at,
        what_happened=typed["whatHappened"].strip(),
        categories=categories,
        references=tuple(references),
        consequences=typed["consequences"].strip(),
        measures_taken=typed["measuresTaken"].strip(),
        measures_proposed=typed["measuresProposed"].strip(),
    )
    return FormResult(form, MappingProxyType(typed), MappingProxyType({}))


def parse_references(text: str) -> tuple[list[str], list[str]]:
    """(well-formed references, malformed pieces) of a comma- or space-separated list; each once, in order."""
    pieces = [piece.strip().upper() for piece in _SEPARATORS.split(text) if piece.strip()]
    unique = list(dict.fromkeys(pieces))
    return [piece for piece in unique if is_reference(piece)], [piece for piece in unique if not is_reference(piece)]


def _typed(value: object, limit: int) -> str:
    """A card value as text without control characters (line breaks and tabs stay); long input is cut for the card."""
    if not isinstance(value, str):
        return ""
    text = value.replace("\r\n", "\n").replace("\r", "\n")
    cleaned = "".join(char for char in text
                      if char in "\n\t" or (char.isprintable() and not 0xD800 <= ord(char) <= 0xDFFF))
    return cleaned[: limit + 1]  # one over the limit is enough to say it is too long


def _categories(typed: str) -> tuple[str, ...]:
    """The ticked categories (Teams sends a multi-select as "a,b"), in the card's order; unknown values ignored."""
    ticked = {part.strip() for part in typed.split(",")}
    return tuple(category for category in BREACH_CATEGORIES if category in ticked)


def _discovered_at(
    typed: Mapping[str, str], now: dt.datetime, timezone: ZoneInfo, errors: dict[str, FieldError]
) -> dt.datetime | None:
    """The moment of discovery in local time, or None with an error under the date or the time."""
    day = time = None
    date_text, time_text = typed["discoveredDate"].strip(), typed["discoveredTime"].strip()
    if date_text:
        try:
            day = dt.date.fromisoformat(date_text) if _DATE.match(date_text) else None
        except ValueError:
            day = None
        if day is None:
            errors["discoveredDate"] = FieldError("date_format")
    if time_text:
        try:
            time = dt.time.fromisoformat(time_text.zfill(5) if len(time_text) == 4 else time_text) \
                if _TIME.match(time_text) else None
        except ValueError:
            time = None
        if time is None:
            errors["discoveredTime"] = FieldError("time_format")
    if day is None or time is None:
        return None
    moment = dt.datetime.combine(day, time.replace(second=0), tzinfo=timezone)
    if moment.astimezone(dt.UTC) > now.astimezone(dt.UTC) + FUTURE_TOLERANCE:  # real time, not wall-clock time
        field = "discoveredTime" if day == now.astimezone(timezone).date() else "discoveredDate"
        errors[field] = FieldError("in_future")
        return None
    return moment
