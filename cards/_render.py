"""The card functions of the referral dialogue: each fills one template from `templates/` with texts
from one catalogue. The cards that follow a sent referral are in `_follow_up`.

Only `review_card` shows client data. Every user-typed value shown in a TextBlock or FactSet goes
through `escape_markdown`; values put back into inputs are left as typed.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Collection, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

import phonenumbers

from bot.core import referral_values as referral
from bot.core.referral_values import ClientDetails, FieldError
from cards._consent_version import consent_text_version
from cards._errors import CardError
from cards._markdown import escape_markdown
from cards._template import WHEN, fill, load_template, render_template
from cards._texts import Language, catalogue, text
from cards._views import ProtocolFacts

Card = dict[str, Any]

VERB_START: Final = "referral.start"
VERB_CONSENT: Final = "referral.consent"
VERB_DETAILS: Final = "referral.details"
VERB_EDIT: Final = "referral.edit"
VERB_SEND: Final = "referral.send"
VERB_CANCEL: Final = "referral.cancel"
VERBS: Final = frozenset({VERB_START, VERB_CONSENT, VERB_DETAILS, VERB_EDIT, VERB_SEND, VERB_CANCEL})

#: The toggles of the consent card, in card order.
CONSENT_TOGGLES: Final = ("informedData", "informedRecipient", "informedPurpose", "informedFollowUp", "consentGiven")
#: What `consent_card(missing=...)` accepts: the choice of OCMW and every toggle.
CONSENT_INPUTS: Final = ("ocmw", *CONSENT_TOGGLES)
#: The only inputs of the details card, in card order, with their `maxLength` (one source: the domain).
FIELD_MAX_LENGTHS: Final[Mapping[str, int]] = referral.FIELD_MAX_LENGTHS
DETAIL_FIELDS: Final = referral.DETAIL_FIELDS
#: Every `FieldError.code` the details card has a sentence for.
FIELD_ERROR_CODES: Final = (
    "required",
    "too_long",
    "control_characters",
    "name_characters",
    "house_number_format",
    "postal_code_format",
    "postal_code_outside_area",
    "municipality_mismatch",
    "phone_characters",
    "phone_invalid",
    "phone_too_short",
    "phone_too_long",
    "email_invalid",
    "contact_missing",
)
#: Every problem `problem_card` knows, with the parameters its texts need.
PROBLEMS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "draft_unknown": (),
        "draft_expired": ("minutes",),
        "draft_sent": ("reference",),
        "draft_sending": ("reference",),
        "draft_cancelled": ("reference",),
        "draft_foreign": (),
        "step_not_possible": (),
        "no_protocol_in_force": (),
        "protocol_not_in_force": ("ocmw",),
        "protocol_ended": ("ocmw", "reference"),
        "not_allowed": (),
        "not_listed": (),
        "membership_unavailable": (),
        "no_longer_listed": ("ocmw", "reference"),
        "not_listed_for_team": ("team", "ocmw"),
        "unknown_action": (),
        "malformed_action": (),
        "send_failed": ("reference", "minutes"),
        "password_unavailable": ("reference", "minutes"),
        "not_delivered": ("reference", "recipient"),
        "rate_limited": ("minutes",),
        "internal_error": (),
        "database_unavailable": (),
        "not_ocmw_conversation": (),
        "referral_unknown": ("reference",),
        "outcome_invalid": (),
        "correction_unknown": (),
        "correction_done": ("reference",),
        "correction_answered_none": ("reference", "item", "recipient"),
        "correction_none_no_channel": ("reference", "item", "recipient"),
        "action_not_possible_now": ("reference",),
        "correction_closed": ("reference",),
        "correction_withdrawn": ("reference",),
        "correction_not_sent": ("reference",),
        "correction_not_queued": ("reference",),
        "correction_not_delivered": ("reference", "recipient"),
        "correction_not_delivered_carried_later": ("reference", "recipient", "item", "later"),
        "correction_not_delivered_answered_none": ("reference", "recipient", "item"),
        "not_sent_protocol_ended": ("reference", "recipient"),
        "correction_not_sent_protocol_ended": ("reference", "recipient"),
        "withdrawal_after_filing": ("reference", "ocmw", "dpo"),
        "withdrawal_after_deletion": ("reference", "ocmw"),
        "withdrawal_never_delivered": ("reference", "ocmw"),
        "being_sent": ("reference",),
    }
)
#: Problems answered outside the referral dialogue (the OCMW's card, a correction), and a referral
#: being sent right now: their card has no "start again" button, which would begin a new referral
#: (of the same family, for the one being sent).
PROBLEMS_WITHOUT_RESTART: Final = frozenset(
    {
        "draft_sending",
        "not_ocmw_conversation",
        "referral_unknown",
        "outcome_invalid",
        "correction_unknown",
        "correction_done",
        "correction_answered_none",
        "correction_none_no_channel",
        "action_not_possible_now",
        "correction_closed",
        "correction_withdrawn",
        "correction_not_sent",
        "correction_not_queued",
        "correction_not_delivered",
        "correction_not_delivered_carried_later",
        "correction_not_delivered_answered_none",
        "not_sent_protocol_ended",
        "correction_not_sent_protocol_ended",
        "withdrawal_after_filing",
        "withdrawal_after_deletion",
        "withdrawal_never_delivered",
        "being_sent",
        "not_listed_for_team",
    }
)
#: Problems of a send that did not happen: their card can offer to send the same draft again.
PROBLEMS_WITH_RETRY: Final = frozenset({"send_failed", "password_unavailable", "membership_unavailable"})
_TIME_FORMAT = "%d/%m/%Y %H:%M"
_TEAMS_LINK_PREFIX = "https://teams.microsoft.com/l/"
_DATE_FORMAT = "%d/%m/%Y"
#: The information sheet is a public web page (PUBLIC_BASE_URL: https; http only to localhost when testing).
_SHEET_URL_SCHEMES = ("https://", "http://")


def welcome_card(lang: Language) -> Card:
    """What the bot does and under which conditions, with the "new referral" button (personal chat only)."""
    return render("welcome", lang, {})


def shared_welcome_card(lang: Language) -> Card:
    """The welcome in a team or group chat: what the bot does in the OCMW's channel (acknowledging,
    `koppel`, `status`), and that referrals are made in the personal chat. No start button: a referral
    shows the family's data to whoever reads the card."""
    return render("welcome_shared", lang, {})


def personal_chat_card(lang: Language, *, chat_url: str) -> Card:
    """The answer to a referral step outside the personal chat: why not here, and how to get there.

    `chat_url` is Teams' deep link to the bot's personal chat, or "" when there is none (no app id,
    as in the Agents Playground): then the card only says how to find the chat, since an
    Action.OpenUrl needs a URL.
    """
    if chat_url and not chat_url.startswith(_TEAMS_LINK_PREFIX):
        raise CardError(f"personal_chat_card: chat_url must start with {_TEAMS_LINK_PREFIX}")
    return render("personal_chat", lang, {"chatUrl": chat_url})


def consent_card(
    lang: Language,
    *,
    draft_id: str,
    protocols: Sequence[ProtocolFacts],
    selected: str | None,
    ticked: Mapping[str, bool],
    missing: Collection[str],
    ending: Sequence[tuple[str, dt.date]] = (),
    changed: bool = False,
) -> Card:
    """Step 1: choose the OCMW, read the parents what the protocol allows, tick the points and their consent.

    `protocols` are the protocols in force; the card names their OCMWs and both DPOs, and links each
    one's information sheet when it has a `sheet_url`. `missing` holds ids from `CONSENT_INPUTS` that
    get a red line under them. `ending` are (recipient organisation, last day) of protocols in their
    last month: the referrer reads until when. `changed`: the texts changed since the card the worker
    answered was shown, so this one says to read them again. The continue button carries the version
    of the texts shown (`textVersion`), so the dialogue records the words the parents heard.
    """
    if not protocols:
        raise CardError("consent_card needs at least one protocol in force")
    unknown = set(missing) - set(CONSENT_INPUTS)
    if unknown:
        raise CardError(f"consent_card: unknown missing inputs {sorted(unknown)}")
    ids = [protocol.id for protocol in protocols]
    if selected in ids:
        chosen = selected
    elif len(protocols) == 1:
        chosen = ids[0]
    else:
        chosen = ""
    if len(protocols) == 1:
        recipient_text = text(lang, "consent.recipient.text_one", ocmw=protocols[0].recipient)
    else:
        recipient_text = text(lang, "consent.recipient.text_choose")
    version = consent_text_version()
    summary = "consent.changed" if changed else "consent.missing.summary" if missing else ""
    values: dict[str, Any] = {
        "draftId": draft_id,
        "ocmwChoices": [{"title": protocol.recipient, "value": protocol.id} for protocol in protocols],
        "ocmwValue": chosen,
        "recipientText": recipient_text,
        "summary": text(lang, summary) if summary else "",
        "endingNotice": "\n\n".join(
            text(lang, "consent.ending", ocmw=organisation, date=last_day.strftime(_DATE_FORMAT))
            for organisation, last_day in ending
        ),
        "sheetActions": _sheet_actions(lang, protocols),
        "dpoFacts": [
            {"title": text(lang, "consent.rights.dpo", organisation=organisation), "value": address}
            for organisation, address in _dpos(protocols)
        ],
        "versionText": text(lang, "consent.version_label", version=version),
        "textVersion": version,
    }
    for input_id in CONSENT_INPUTS:
        values[f"missing.{input_id}"] = text(lang, f"consent.missing.{input_id}") if input_id in missing else ""
    for toggle in CONSENT_TOGGLES:
        values[f"value.{toggle}"] = "true" if ticked.get(toggle) else "false"
    return render("consent", lang, values)


def _dpos(protocols: Sequence[ProtocolFacts]) -> list[tuple[str, str]]:
    """(organisation, DPO address) of the senders, then of each OCMW, each pair once, in protocol order."""
    pairs = [(p.sender, p.sender_dpo) for p in protocols] + [(p.recipient, p.recipient_dpo) for p in protocols]
    return list(dict.fromkeys(pairs))


def _sheet_actions(lang: Language, protocols: Sequence[ProtocolFacts]) -> list[dict[str, str]]:
    """A button per protocol that has an information sheet address; named after the OCMW when there are several."""
    actions = []
    for protocol in protocols:
        if not protocol.sheet_url:
            continue
        if not protocol.sheet_url.startswith(_SHEET_URL_SCHEMES):
            raise CardError(f"consent_card: the sheet_url of {protocol.id} must be an http(s) address")
        title = (text(lang, "consent.sheet.button") if len(protocols) == 1
                 else text(lang, "consent.sheet.button_for", ocmw=protocol.recipient))
        actions.append({"type": "Action.OpenUrl", "title": title, "url": protocol.sheet_url})
    return actions


def details_card(
    lang: Language,
    *,
    draft_id: str,
    recipient: str,
    municipality: str,
    values: Mapping[str, str],
    errors: Mapping[str, FieldError],
) -> Card:
    """Step 2: the eight inputs, with what was typed kept and each error right under its input.

    `values` and `errors` are keyed by the ids in `DETAIL_FIELDS`; other keys in `values` are ignored.
    """
    filled: dict[str, Any] = {
        "draftId": draft_id,
        "areaText": text(lang, "details.area", municipality=municipality, recipient=recipient),
        "summary": errors_summary(lang, errors),
        **_field_values(lang, DETAIL_FIELDS, municipality, values, errors),
    }
    return render("details", lang, filled)


def field_elements(
    lang: Language,
    fields: Sequence[str],
    municipality: str,
    values: Mapping[str, str],
    errors: Mapping[str, FieldError],
) -> list[Any]:
    """The details card's inputs for `fields` only, each with its error right under it, as filled
    body elements: the same ids, labels, limits, placeholders and error texts as `details_card`."""
    error_flags = {f"${{error.{field}}}" for field in fields}
    wanted = [
        element
        for element in load_template("details")["body"]
        if element.get("id") in fields or element.get(WHEN) in error_flags
    ]
    return list(fill(wanted, {**_text_values(lang), **_field_values(lang, fields, municipality, values, errors)}))


def _field_values(
    lang: Language,
    fields: Sequence[str],
    municipality: str,
    values: Mapping[str, str],
    errors: Mapping[str, FieldError],
) -> dict[str, Any]:
    """The template values of the inputs `fields`: what was typed and the error text under each."""
    unknown = set(errors) - set(fields)
    if unknown:
        raise CardError(f"errors for fields not on this card: {sorted(unknown)}")
    filled: dict[str, Any] = {
        "municipalityPlaceholder": text(lang, "field.municipality.placeholder", municipality=municipality),
    }
    for field in fields:
        value = values.get(field, "")
        filled[f"value.{field}"] = value if isinstance(value, str) else ""
        error = errors.get(field)
        filled[f"error.{field}"] = "" if error is None else field_error_text(lang, field, error)
    return filled


def field_error_text(lang: Language, field: str, error: FieldError) -> str:
    """The sentence for `error` on the input `field`: what is wrong and how to fix it."""
    if error.code not in FIELD_ERROR_CODES:
        raise CardError(f"no text for field error code {error.code!r}")
    params = {"field": text(lang, f"field.{field}.name"), **dict(error.params)}
    return text(lang, f"error.{error.code}", **params)


def review_card(
    lang: Language,
    *,
    draft_id: str,
    recipient: str,
    mailbox: str,
    client: ClientDetails,
    details_fingerprint: str,
    changed: bool = False,
) -> Card:
    """Step 3: the data as it will be sent, where it goes, and send / edit / cancel.

    The send button carries `details_fingerprint` (`DraftStore.details_fingerprint` of `client`), so
    the dialogue sends only the data this card showed. `changed`: the data changed since the card the
    referrer answered (in another window), so this one says to check it and send again.
    """
    if not details_fingerprint:
        raise CardError("review_card needs the fingerprint of the data it shows")
    none = text(lang, "review.none")
    address = (
        f"{escape_markdown(client.street)} {escape_markdown(client.house_number)}, "
        f"{escape_markdown(client.postal_code)} {escape_markdown(client.municipality)}"
    )
    values: dict[str, Any] = {
        "draftId": draft_id,
        "client.firstName": escape_markdown(client.first_name),
        "client.lastName": escape_markdown(client.last_name),
        "client.address": address,
        "client.phone": escape_markdown(_readable_phone(client.phone)) if client.phone else none,
        "client.email": escape_markdown(client.email) if client.email else none,
        "destinationText": text(lang, "review.destination", mailbox=mailbox, recipient=recipient),
        "detailsFingerprint": details_fingerprint,
        "changedNotice": text(lang, "review.changed") if changed else "",
    }
    return render("review", lang, values)


def sent_card(lang: Language, *, reference: str, recipient: str, mailbox: str, sent_at: dt.datetime) -> Card:
    """Delivered: reference, recipient, time; and the button to record that consent was withdrawn."""
    """The referral was sent: reference, recipient, mailbox and (local) time; no client data."""
    return render("sent", lang, _outcome_values(reference, recipient, mailbox, sent_at))


def queued_card(lang: Language, *, reference: str, recipient: str, mailbox: str, queued_at: dt.datetime) -> Card:
    """The referral is queued for sending; a message follows on delivery. No client data."""
    return render("queued", lang, _outcome_values(reference, recipient, mailbox, queued_at))


def cancelled_card(lang: Language, *, reference: str | None = None) -> Card:
    """The referral was cancelled: nothing sent, data deleted; the reference when given."""
    return render("cancelled", lang, {"reference": reference or ""})


def notice_card(lang: Language, message: str) -> Card:
    """A card that only says `message` (a text from the catalogue), e.g. after a link or a withdrawal."""
    return render("notice", lang, {"message": message})


def with_warning(card: Card, message: str) -> Card:
    """`card` with `message` (a text from the catalogue) above it in the attention colour, e.g. to delete the
    chat message the card answers."""
    warning = {"type": "TextBlock", "text": message, "color": "attention", "weight": "Bolder", "wrap": True}
    return {**card, "body": [warning, *card["body"]]}


def problem_card(lang: Language, problem: str, **params: str) -> Card:
    """A refusal or error from `PROBLEMS`: what happened, why, and what to do; "start again" unless
    the problem is in `PROBLEMS_WITHOUT_RESTART` (those cards have no button).

    For the problems in `PROBLEMS_WITH_RETRY`, passing `draft_id` and `details_fingerprint` (of the
    data the review card showed, see `review_card`) adds a "try sending again" button (verb
    referral.send) that sends only that data.
    """
    if problem not in PROBLEMS:
        raise CardError(f"unknown problem {problem!r}")
    retry_draft_id = params.pop("draft_id", "")
    retry_fingerprint = params.pop("details_fingerprint", "")
    if retry_draft_id and problem not in PROBLEMS_WITH_RETRY:
        raise CardError(f"draft_id (a retry button) is only for {', '.join(sorted(PROBLEMS_WITH_RETRY))}")
    if bool(retry_draft_id) != bool(retry_fingerprint):
        raise CardError("a retry button needs both draft_id and details_fingerprint")
    values = {
        "title": text(lang, f"problem.{problem}.title", **params),
        "text": text(lang, f"problem.{problem}.text", **params),
        "retryDraftId": retry_draft_id,
        "retryFingerprint": retry_fingerprint,
        "restart": problem not in PROBLEMS_WITHOUT_RESTART,
    }
    return render("problem", lang, values)


def problem_banner(lang: Language, problem: str, **params: str) -> str:
    """A problem from `PROBLEMS` as one short text, for an answer that leaves the clicked card in place."""
    if problem not in PROBLEMS:
        raise CardError(f"unknown problem {problem!r}")
    return f"{text(lang, f'problem.{problem}.title', **params)}. {text(lang, f'problem.{problem}.text', **params)}"


def format_time(at: dt.datetime) -> str:
    """A local time as every card shows it: 02/03/2026 14:05.

    Refuses a naive time and one still in `dt.UTC` (the clock's and the store's), so a caller that forgot
    `.astimezone(tz)` fails in its tests instead of showing a time an hour or two off. A deployment whose
    local zone is UTC passes `ZoneInfo("UTC")`, which is not `dt.UTC`.
    """
    if at.tzinfo is None or at.tzinfo is dt.UTC:
        raise CardError(f"a card shows local time: convert {at.isoformat()} with .astimezone(tz) first")
    return at.strftime(_TIME_FORMAT)


def join_names(lang: Language, names: Sequence[str]) -> str:
    """Names as a list people read: "a", "a en b", "a, b en c"."""
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} {text(lang, 'list.and')} {names[-1]}"


def render(template: str, lang: Language, values: Mapping[str, Any]) -> Card:
    """The template `template` filled with `values` and every text of `lang` as `${t.<key>}`."""
    return render_template(template, {**_text_values(lang), **values})


@functools.cache
def _text_values(lang: Language) -> dict[str, str]:
    """The catalogue as template values: `${t.<key>}`. Callers copy it, never change it.

    A plain dict, not a read-only proxy: every card copies all 434 texts into its values, which is
    ~2 us from a dict and ~25 us through a `MappingProxyType` (it is unpacked key by key).
    """
    return {f"t.{key}": value for key, value in catalogue(lang).items()}


def _outcome_values(reference: str, recipient: str, mailbox: str, at: dt.datetime) -> dict[str, str]:
    return {"reference": reference, "recipient": recipient, "mailbox": mailbox, "time": format_time(at)}


def errors_summary(lang: Language, errors: Mapping[str, FieldError]) -> str:
    names = [text(lang, f"field.{field}.name") for field in DETAIL_FIELDS if field in errors]
    if not names:
        return ""
    return text(lang, "details.errors.summary", fields=join_names(lang, names))


def _readable_phone(phone: str) -> str:
    """An E.164 number as people read it: +32 470 12 34 56."""
    try:
        number = phonenumbers.parse(phone, "BE")
    except phonenumbers.NumberParseException:
        return phone
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
