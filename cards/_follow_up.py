"""The cards after "send": the OCMW's card per package, status lists, corrections, channel linking.

None of them shows client data; the correction request only has empty inputs (or what the referrer
just typed). Teams display names are user-controlled and go through `escape_markdown`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, Literal, cast

from bot.core import referral_values as referral
from bot.core.referral_values import FieldError
from cards._errors import CardError
from cards._markdown import escape_markdown
from cards._render import Card, errors_summary, field_elements, format_time, join_names, render
from cards._template import render_part
from cards._texts import Language, text
from cards._views import (
    NOTICES,
    OCMW_STATES,
    OUTCOMES,
    REFERRAL_ITEMS,
    STATUS_STATES,
    OcmwReferralView,
    ReferralItem,
    StatusRow,
)

VERB_ACKNOWLEDGE: Final = "ack.receive"
VERB_OUTCOME: Final = "referral.outcome"
VERB_QUALITY: Final = "referral.quality"
VERB_DELETED: Final = "referral.deleted"
VERB_CORRECTION_SUBMIT: Final = "correction.submit"
VERB_CORRECTION_LATER: Final = "correction.later"
#: "Er is geen juist gegeven": the family has no correct value of the item (article 7); asked once more.
VERB_CORRECTION_NONE: Final = "correction.none"
#: The items a family may have no correct value of (no other phone number, no e-mail address): "Er is geen juist ...".
ITEMS_WITHOUT_VALUE: Final = frozenset({"phone", "email"})
VERB_LINK_CONFIRM: Final = "link.confirm"
VERB_LINK_CANCEL: Final = "link.cancel"
VERB_CORRECTION_START: Final = "correction.start"
VERB_CORRECTION_OPEN: Final = "correction.open"
#: The verbs of the cards in this module (the dialogue's own are `VERBS`).
FOLLOW_UP_VERBS: Final = frozenset(
    {
        VERB_ACKNOWLEDGE,
        VERB_OUTCOME,
        VERB_QUALITY,
        VERB_DELETED,
        VERB_CORRECTION_SUBMIT,
        VERB_CORRECTION_LATER,
        VERB_CORRECTION_NONE,
        VERB_LINK_CONFIRM,
        VERB_LINK_CANCEL,
        VERB_CORRECTION_START,
        VERB_CORRECTION_OPEN,
    }
)
#: The inputs of the details card that make up each item a correction carries, in card order.
ITEM_FIELDS: Final[Mapping[ReferralItem, tuple[str, ...]]] = cast(
    Mapping[ReferralItem, tuple[str, ...]], referral.ITEM_FIELDS
)
#: At most this many rows on a status card; the rest is counted.
STATUS_MAX_ROWS: Final = 30

_OUTCOME_OF_STATE: Final[Mapping[str, str]] = MappingProxyType(
    {"help_wanted": "contact_help_wanted", "no_help_wanted": "contact_no_help_wanted", "unreachable": "unreachable"}
)
_NOTICE_COLORS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "already_acknowledged": "accent",
        "quality_item_missing": "attention",
        "quality_reported": "good",
        "quality_reported_protocol_ended": "warning",
        "superfluous_reported": "good",
        "outcome_already_recorded": "accent",
        "deletion_recorded": "good",
    }
)


def ocmw_referral_card(lang: Language, view: OcmwReferralView) -> Card:
    """The card in the OCMW's channel for one delivered package, showing what is left to do.

    sent: acknowledge receipt. received: record the outcome. help_wanted: file the data in the OCMW's
    own dossier, delete the mail and confirm; no_help_wanted, unreachable, consent_withdrawn: delete
    the mail and confirm (after "niet bereikt" the family may still be reached, e.g. after a correction:
    the two contact outcomes stay on the card). data_deleted: done. From delivery until deletion an item can be reported
    wrong (article 7). A correction version's card leaves outcome and deletion to its referral's card.
    """
    state = view.state
    if state not in OCMW_STATES:
        raise CardError(f"ocmw_referral_card: unknown state {state!r}")
    if view.notice is not None and view.notice not in NOTICES:
        raise CardError(f"ocmw_referral_card: unknown notice {view.notice!r}")
    unknown_items = set(view.reported_items) - set(REFERRAL_ITEMS)
    if unknown_items:
        raise CardError(f"ocmw_referral_card: unknown reported items {sorted(unknown_items)}")
    if (view.correction_of is None) != (view.corrected_item is None):
        raise CardError("ocmw_referral_card: correction_of and corrected_item go together")
    if view.corrected_item is not None and view.corrected_item not in REFERRAL_ITEMS:
        raise CardError(f"ocmw_referral_card: unknown corrected item {view.corrected_item!r}")

    acknowledged = _by_at(view.acknowledged_by, view.acknowledged_at, required=state == "received")
    outcome = _OUTCOME_OF_STATE.get(state)
    recorded = _by_at(view.outcome_by, view.outcome_at, required=outcome is not None)
    deleted = _by_at(view.deleted_by, view.deleted_at, required=state == "data_deleted")

    notice = ""
    if view.notice == "already_acknowledged":
        if acknowledged is None:
            raise CardError("ocmw_referral_card: the notice already_acknowledged needs acknowledged_by/at")
        notice = text(lang, "notice.already_acknowledged", **acknowledged)
    elif view.notice == "quality_reported_protocol_ended":
        notice = text(lang, "notice.quality_reported_protocol_ended", team=view.sender_team)
    elif view.notice is not None:
        notice = text(lang, f"notice.{view.notice}")

    if view.correction_of is not None and view.corrected_item is not None:
        title = text(
            lang,
            "ocmw.title_correction",
            reference=view.reference,
            correction_of=view.correction_of,
            item=text(lang, f"item.{view.corrected_item}.label"),
        )
        correction_text = text(
            lang,
            "ocmw.correction.text",
            item=text(lang, f"item.{view.corrected_item}.name"),
            correction_of=view.correction_of,
        )
    else:
        title = text(lang, "ocmw.title", reference=view.reference)
        correction_text = ""

    delete_text = ""
    if state in {"no_help_wanted", "unreachable", "consent_withdrawn", "help_wanted"}:
        delete_text = text(lang, f"ocmw.delete.{state}", reference=view.correction_of or view.reference)
    # Article 7: a wrong item can be reported from delivery until the data is deleted ("niet bereikt" too).
    show_quality = state in {"sent", "received", "help_wanted", "no_help_wanted", "unreachable"}
    is_version = view.correction_of is not None
    reported = [text(lang, f"item.{item}.label") for item in REFERRAL_ITEMS if item in view.reported_items]

    values: dict[str, Any] = {
        "title": title,
        "notice": notice,
        "noticeColor": _NOTICE_COLORS.get(view.notice or "", "default"),
        "correctionText": correction_text,
        "reference": view.reference,
        "sentAt": format_time(view.sent_at),
        "senderTeam": view.sender_team,
        "mailbox": view.mailbox,
        "keyVersion": view.key_version,
        "openText": text(
            lang, "ocmw.open", reference=view.reference, mailbox=view.mailbox, key_version=view.key_version
        ),
        "holdsData": state != "data_deleted",
        "isSent": state == "sent",
        "ackLine": "" if acknowledged is None else text(lang, "ocmw.acknowledged", **acknowledged),
        "isReceived": state == "received" and not is_version,
        "reachedAfterAll": state == "unreachable" and not is_version,
        "versionFollowUp": text(lang, "ocmw.version.follow_up", correction_of=view.correction_of)
        if view.correction_of is not None and state == "received" else "",
        "outcomeLine": ""
        if outcome is None or recorded is None
        else text(lang, "ocmw.outcome.recorded", outcome=text(lang, f"outcome.{outcome}"), **recorded),
        "isHelpWanted": state == "help_wanted",
        "deleteText": delete_text,
        "deleteButton": text(
            lang, "action.data_filed_and_deleted" if state == "help_wanted" else "action.data_deleted"
        ),
        "deletedLine": "" if deleted is None else text(lang, "ocmw.deleted", **deleted),
        "showQuality": show_quality,
        "reportedText": text(lang, "ocmw.quality.reported", items=join_names(lang, reported))
        if show_quality and reported
        else "",
        "itemChoices": [{"title": text(lang, f"item.{item}.label"), "value": item} for item in REFERRAL_ITEMS],
    }
    return render("ocmw_referral", lang, values)


def referral_status_card(
    lang: Language, *, audience: Literal["referrer", "ocmw"], rows: Sequence[StatusRow], total: int | None = None
) -> Card:
    """A compact list of referrals and where each stands: the referrer's own ("Mijn doorverwijzingen",
    with a "new referral" button) or the OCMW's open ones. At most `STATUS_MAX_ROWS` rows, in the
    order given; the card says how many more there are: of `total` when the caller passed only the first
    of them, else of `rows`."""
    if audience not in {"referrer", "ocmw"}:
        raise CardError(f"referral_status_card: unknown audience {audience!r}")
    shown = rows[:STATUS_MAX_ROWS]
    hidden = max(len(rows) if total is None else total, len(rows)) - len(shown)
    values: dict[str, Any] = {
        "title": text(lang, f"status.title.{audience}"),
        "emptyText": "" if rows else text(lang, f"status.empty.{audience}"),
        "rows": [_status_row(lang, row, show_recipient=audience == "referrer") for row in shown],
        "moreText": text(lang, "status.more", shown=str(len(shown)), count=str(hidden)) if hidden else "",
        "forReferrer": audience == "referrer",
    }
    return render("referral_status", lang, values)


def correction_request_card(
    lang: Language,
    *,
    correction_id: str,
    reference: str,
    item: ReferralItem,
    recipient: str,
    municipality: str,
    values: Mapping[str, str],
    errors: Mapping[str, FieldError],
    own_initiative: bool = False,
) -> Card:
    """To the referrer: the OCMW reports `item` of `reference` wrong (article 7), or Kind en Gezin corrects
    it on its own initiative; the inputs of that item only, exactly as on the details card (ids from
    `ITEM_FIELDS[item]`), errors under each."""
    if item not in ITEM_FIELDS:
        raise CardError(f"correction_request_card: unknown item {item!r}")
    fields = ITEM_FIELDS[item]
    filled: dict[str, Any] = {
        "correctionId": correction_id,
        "summary": errors_summary(lang, errors),
        "requestText": text(
            lang,
            "correction.request.own_text" if own_initiative else "correction.request.text",
            recipient=recipient,
            item=text(lang, f"item.{item}.name"),
            reference=reference,
        ),
        "areaText": text(lang, "details.area", municipality=municipality, recipient=recipient)
        if item == "address"
        else "",
        "fields": field_elements(lang, fields, municipality, values, errors),
        # A family may have no (other) phone number or e-mail address; a name and an address it always has.
        "noneTitle": text(lang, "action.correction_none", item=item_word(lang, item))
        if item in ITEMS_WITHOUT_VALUE else "",
        "noneText": text(lang, "correction.request.none", item=item_word(lang, item)),
    }
    return render("correction_request", lang, filled)


def item_word(lang: Language, item: str) -> str:
    """The item as a bare word inside a sentence ("telefoonnummer", "e-mailadres"): its label, in lower case."""
    return text(lang, f"item.{item}.label").lower()


def correction_start_card(lang: Language, *, reference: str, recipient: str) -> Card:
    """Kind en Gezin corrects an item on its own initiative (article 7): first, which item."""
    return render("correction_start", lang, {
        "reference": reference,
        "startText": text(lang, "correction.start.text", reference=reference, recipient=recipient),
        "itemChoices": [{"title": text(lang, f"item.{item}.label"), "value": item} for item in REFERRAL_ITEMS],
    })


def correction_queued_card(
    lang: Language, *, reference: str, corrected_item: str, recipient: str, queued_at: dt.datetime
) -> Card:
    """The correction `reference` is queued for sending to `recipient`; which item, never its value."""
    if corrected_item not in ITEM_FIELDS:
        raise CardError(f"correction_queued_card: unknown item {corrected_item!r}")
    values = {
        "queuedText": text(lang, "correction.queued.text", reference=reference, recipient=recipient),
        "reference": reference,
        "recipient": recipient,
        "item": text(lang, f"item.{corrected_item}.label"),
        "time": format_time(queued_at),
    }
    return render("correction_queued", lang, values)


def link_confirm_card(lang: Language, *, ocmw: str, code: str) -> Card:
    """The protocol with `ocmw` is linked to another conversation: replace it with this one?"""
    return render("link_confirm", lang, {"confirmText": text(lang, "link.confirm.text", ocmw=ocmw), "code": code})


def _by_at(by: str | None, at: dt.datetime | None, *, required: bool) -> dict[str, str] | None:
    """The escaped display name and the time of one step, as text parameters; None when not done."""
    if by is None and at is None:
        if required:
            raise CardError("ocmw_referral_card: this state needs who did it and when")
        return None
    if by is None or at is None:
        raise CardError("ocmw_referral_card: a *_by and its *_at go together")
    return {"name": escape_markdown(by), "time": format_time(at)}


def _status_row(lang: Language, row: StatusRow, *, show_recipient: bool) -> Any:
    if row.state not in STATUS_STATES:
        raise CardError(f"referral_status_card: unknown state {row.state!r}")
    if row.outcome is not None and row.outcome not in OUTCOMES:
        raise CardError(f"referral_status_card: unknown outcome {row.outcome!r}")
    label = text(lang, f"status.state.{row.state}")
    if row.outcome is not None and row.state not in _OUTCOME_OF_STATE:
        label = text(
            lang, "status.state_with_outcome", state=label, outcome=text(lang, f"status.outcome.{row.outcome}")
        )
    times = [text(lang, "status.time.queued", time=format_time(row.queued_at))]
    if row.sent_at is not None:
        times.append(text(lang, "status.time.sent", time=format_time(row.sent_at)))
    if row.acknowledged_at is not None:
        times.append(text(lang, "status.time.acknowledged", time=format_time(row.acknowledged_at)))
    failed = row.state == "failed"
    notes = [text(lang, "status.teams_message_lost")] if row.teams_message_lost else []
    if row.awaiting_deletion:
        notes.insert(0, text(lang, "status.awaiting_deletion"))
    return render_part(
        "status_row",
        {
            "reference": row.reference,
            "recipient": row.recipient if show_recipient else "",
            "times": " · ".join(times),
            "stateLabel": label,
            "stateColor": "attention" if failed else "default",
            "stateWeight": "Bolder" if failed else "Default",
            "lostText": " ".join(notes),
        },
    )
