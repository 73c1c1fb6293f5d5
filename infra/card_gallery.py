"""Every card the bot can show, filled with fictitious sample data, in Dutch and English.

One place for the schema test, the renderer test and the screenshots in `docs/img/cards/`.
Every public `*_card` function of `cards` must have a sample here: `missing_samples()` names
the ones that do not, and a test fails on it, so a new card cannot skip validation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cards
from bot.core.referral_values import ClientDetails, FieldError

Card = dict[str, Any]
CardMaker = Callable[[cards.Language], Card]

# Fictitious: no real person, a documentation address (example.be) and a reserved-looking reference.
DRAFT_ID = "d-7f3a9c2e"
FINGERPRINT = "q3Vb0Lk2xY8fT1mA"  # a details fingerprint: 16 URL-safe characters, no client data
REFERENCE = "VD-20261128-K7M2QX"
RECIPIENT = "OCMW Sint-Gillis-Waas"
MAILBOX = "welzijnshuis@sint-gillis-waas.be"
MUNICIPALITY = "Sint-Gillis-Waas"
PLACES = "Sint-Gillis-Waas, De Klinge, Meerdonk, Sint-Pauwels"
SHEET_BASE_URL = "https://veilig-doorverwijzen.example.be/informatieblad/"
PROTOCOL_SGW = cards.ProtocolFacts(
    id="OR-KG-NOW-OCMW-SGW-2026", title="Protocol Opgroeien regie - OCMW Sint-Gillis-Waas (onderbescherming)",
    sender="Opgroeien regie", sender_team="Kind en Gezin team Noord-Oost Waasland", sender_dpo="dpo@opgroeien.be",
    recipient=RECIPIENT, recipient_dpo="informatica@sint-gillis-waas.be", in_force_from=dt.date(2026, 3, 1),
    sheet_url=SHEET_BASE_URL + "OR-KG-NOW-OCMW-SGW-2026",
)
PROTOCOLS = [PROTOCOL_SGW]
TWO_PROTOCOLS = [
    PROTOCOL_SGW,
    dataclasses.replace(PROTOCOL_SGW, id="OR-KG-NOW-OCMW-BEV-2026", title="Protocol Opgroeien regie - OCMW Beveren",
                        recipient="OCMW Beveren", recipient_dpo="dpo@ocmw-beveren.example.be",
                        sheet_url=SHEET_BASE_URL + "OR-KG-NOW-OCMW-BEV-2026"),
]
WHEN = dt.datetime(2026, 11, 28, 10, 5, tzinfo=dt.timezone(dt.timedelta(hours=1)))
CLIENT = ClientDetails(
    first_name="Sofie",
    last_name="Peeters",
    street="Kerkstraat",
    house_number="12 bus 3",
    postal_code="9170",
    municipality="Meerdonk",
    phone="+32470123456",
    email="sofie.peeters@example.be",
)
TYPED_WITH_ERRORS = {
    "firstName": "Sofie",
    "lastName": "Peeters",
    "street": "Kerkstraat",
    "houseNumber": "12 bus 3",
    "postalCode": "9100",
    "municipality": "Sint-Niklaas",
    "phone": "0470 12 34",
    "email": "",
}
#: What the postal-code and municipality errors name, as `bot.referral.details_validation` fills them from the protocol.
AREA = (("municipality", MUNICIPALITY), ("ocmw", RECIPIENT), ("places", PLACES),
        ("accepted", f"9170 ({PLACES})"))
FIELD_ERRORS = {
    "postalCode": FieldError("postal_code_outside_area", AREA),
    "municipality": FieldError("municipality_mismatch", AREA),
    "phone": FieldError("phone_too_short"),
}
#: Values for the parameters a problem text may need; an unknown one gets a generic value.
PROBLEM_PARAMS = {"reference": REFERENCE, "ocmw": RECIPIENT, "recipient": RECIPIENT, "minutes": "30"}
SENDER_TEAM = "Kind en Gezin team Noord-Oost Waasland"
#: Teams' deep link to the bot's personal chat, for a made-up app id.
PERSONAL_CHAT_URL = "https://teams.microsoft.com/l/chat/0/0?users=28:0b8a3c4e-1d2f-4a5b-9c6d-7e8f9a0b1c2d"
KEY_VERSION = "8c1f0e5b2d7a4c39b6e0f1a2d3c4b5a6"  # a Key Vault secret version
OCMW_WORKER = "Inge Maatschappelijk Werker"
LATER = WHEN + dt.timedelta(hours=2)
EVEN_LATER = WHEN + dt.timedelta(days=3)
SENT_VIEW = cards.OcmwReferralView(
    reference=REFERENCE,
    sent_at=WHEN,
    sender_team=SENDER_TEAM,
    recipient=RECIPIENT,
    mailbox=MAILBOX,
    key_version=KEY_VERSION,
    state="sent",
)
RECEIVED_VIEW = dataclasses.replace(SENT_VIEW, state="received", acknowledged_by=OCMW_WORKER, acknowledged_at=LATER)
BREACH_ID = "DL-20261128-P4HT9W"
BREACH_TYPED = {
    "kind": "wrong_recipient",
    "discoveredDate": "2026-11-29",
    "discoveredTime": "09:30",
    "whatHappened": "De mail van VD-20261128-K7M2QX ging naar een verkeerd adres.",
    "categories": "identification:name,contact:address",
    "references": "VD-20261128-K7M2QX, VD-2026",
}
BREACH_ERRORS = {
    "discoveredDate": FieldError("in_future"),
    "references": FieldError("reference_format", (("references", "VD-2026"),)),
    "measuresTaken": FieldError("too_long", (("max", "1000"),)),
}
BREACH_REPORTED = cards.BreachReportedView(
    report_id=BREACH_ID,
    recipient=RECIPIENT,
    dpos=("dpo@opgroeien.be", "informatica@sint-gillis-waas.be"),
    discovered_at=WHEN - dt.timedelta(hours=2),
    deadline=WHEN + dt.timedelta(hours=70),
    deadline_state="left",
    hours=70,
    known_references=1,
    unknown_references=(),
    families=1,
    packages=1,
)
STATUS_ROWS = [
    cards.StatusRow("VD-20261128-K7M2QX", RECIPIENT, "received", WHEN, WHEN, LATER, None),
    cards.StatusRow("VD-20261127-P4HT9W", RECIPIENT, "help_wanted", WHEN, WHEN, LATER, "contact_help_wanted"),
    cards.StatusRow("VD-20261126-ZD8ELF", RECIPIENT, "data_deleted", WHEN, WHEN, LATER, "contact_no_help_wanted"),
    cards.StatusRow("VD-20261125-N6VHJ3", RECIPIENT, "sent", WHEN, WHEN, None, None, teams_message_lost=True),
    cards.StatusRow("VD-20261124-QX4P9H", RECIPIENT, "queued", WHEN, None, None, None),
    cards.StatusRow("VD-20261123-B8WN3R", RECIPIENT, "failed", WHEN, None, None, None),
]

#: A DPO's register summary: a made-up hash and a link shaped like the bot's (the token is fictitious).
REGISTER_VIEW = cards.RegisterProtocolView(
    ocmw=RECIPIENT,
    protocol_id="OR-KG-NOW-OCMW-SGW-2026",
    entries=1284,
    first_day=dt.date(2026, 3, 2),
    last_day=dt.date(2026, 11, 28),
    last_seq=1391,
    last_hash="5c1f0e9b2d7a4c39b6e0f1a2d3c4b5a68c1f0e5b2d7a4c39b6e0f1a2d3c4b5a6",
    csv_url="https://veilig-doorverwijzen.azurewebsites.net/register/export/Xk2v-voorbeeld-token",
    json_url="https://veilig-doorverwijzen.azurewebsites.net/register/export/Qm8w-voorbeeld-token?format=json",
)


def _confirm(kind: str) -> CardMaker:
    def make(lang: cards.Language) -> Card:
        if kind == "correction_none":  # asked on a correction card: its item, and Terug shows that card again
            return cards.confirm_card(lang, kind, reference=REFERENCE, verb=cards.VERB_CORRECTION_NONE,
                                      data={"correctionId": "c-1"}, back={"correctionId": "c-1"},
                                      back_verb=cards.VERB_CORRECTION_LATER,
                                      params={"item": cards.item_word(lang, "phone"), "recipient": RECIPIENT})
        return cards.confirm_card(lang, kind, reference=REFERENCE, verb="referral.outcome",
                                  data={"reference": REFERENCE}, back={"reference": REFERENCE})

    return make


@dataclass(frozen=True)
class CardSample:
    """One card to check and picture: `name` is unique per language, `function` the card function."""

    name: str
    function: str
    make: CardMaker
    #: Shown in the user guides (docs/img/cards/); the others are only tested.
    in_docs: bool = False

    def card(self, lang: cards.Language) -> Card:
        return self.make(lang)

    def file_name(self, lang: cards.Language) -> str:
        return f"{self.name}.{lang}.png"


def _problem(problem: str) -> CardMaker:
    def make(lang: cards.Language) -> Card:
        params = {param: PROBLEM_PARAMS.get(param, "voorbeeld") for param in cards.PROBLEMS[problem]}
        return cards.problem_card(lang, problem, **params)

    return make


def _ocmw(view: cards.OcmwReferralView) -> CardMaker:
    return lambda lang: cards.ocmw_referral_card(lang, view)


def _follow_up_samples() -> list[CardSample]:
    """The cards after "send": the OCMW's card in each state, status lists, corrections, linking."""
    outcome_views = {
        state: dataclasses.replace(RECEIVED_VIEW, state=state, outcome_by=OCMW_WORKER, outcome_at=EVEN_LATER)
        for state in ("help_wanted", "no_help_wanted", "unreachable")
    }
    views: dict[str, tuple[cards.OcmwReferralView, bool]] = {
        "sent": (SENT_VIEW, True),
        "received": (RECEIVED_VIEW, True),
        "help-wanted": (outcome_views["help_wanted"], False),
        "no-help-wanted": (outcome_views["no_help_wanted"], True),
        "unreachable": (outcome_views["unreachable"], False),
        "consent-withdrawn": (dataclasses.replace(RECEIVED_VIEW, state="consent_withdrawn"), False),
        "data-deleted": (
            dataclasses.replace(
                outcome_views["no_help_wanted"], state="data_deleted", deleted_by=OCMW_WORKER, deleted_at=EVEN_LATER
            ),
            False,
        ),
        "received-reported": (
            dataclasses.replace(RECEIVED_VIEW, reported_items=("phone",), notice="quality_reported"),
            False,
        ),
        "already-acknowledged": (dataclasses.replace(RECEIVED_VIEW, notice="already_acknowledged"), False),
        "correction": (
            dataclasses.replace(
                SENT_VIEW, reference=f"{REFERENCE}-2", correction_of=REFERENCE, corrected_item="phone"
            ),
            True,
        ),
    }
    ocmw = [
        CardSample(f"ocmw-referral-{name}", "ocmw_referral_card", _ocmw(view), in_docs=in_docs)
        for name, (view, in_docs) in views.items()
    ]
    return [
        *ocmw,
        CardSample(
            "status-referrer",
            "referral_status_card",
            lambda lang: cards.referral_status_card(lang, audience="referrer", rows=STATUS_ROWS),
            in_docs=True,
        ),
        CardSample(
            "status-ocmw",
            "referral_status_card",
            lambda lang: cards.referral_status_card(lang, audience="ocmw", rows=STATUS_ROWS[:4]),
            in_docs=True,
        ),
        CardSample(
            "status-empty",
            "referral_status_card",
            lambda lang: cards.referral_status_card(lang, audience="referrer", rows=[]),
        ),
        CardSample(
            "correction-request",
            "correction_request_card",
            lambda lang: cards.correction_request_card(
                lang,
                correction_id="c-51d0e8",
                reference=REFERENCE,
                item="phone",
                recipient=RECIPIENT,
                municipality=MUNICIPALITY,
                values={},
                errors={},
            ),
            in_docs=True,
        ),
        CardSample(
            "correction-request-address-errors",
            "correction_request_card",
            lambda lang: cards.correction_request_card(
                lang,
                correction_id="c-51d0e8",
                reference=REFERENCE,
                item="address",
                recipient=RECIPIENT,
                municipality=MUNICIPALITY,
                values={"street": "Kerkstraat", "houseNumber": "12", "postalCode": "9100", "municipality": "Gent"},
                errors={"postalCode": FIELD_ERRORS["postalCode"]},
            ),
        ),
        CardSample(
            "correction-queued",
            "correction_queued_card",
            lambda lang: cards.correction_queued_card(
                lang, reference=f"{REFERENCE}-2", corrected_item="phone", recipient=RECIPIENT, queued_at=LATER
            ),
        ),
        CardSample(
            "link-confirm",
            "link_confirm_card",
            lambda lang: cards.link_confirm_card(lang, ocmw=RECIPIENT, code="K7M2-QX4P"),
            in_docs=True,
        ),
        CardSample(
            "register-export",
            "register_export_card",
            lambda lang: cards.register_export_card(
                lang, protocols=[REGISTER_VIEW], chain_entries=1391, chain_problems=0, first_problem_seq=None,
                links_until=WHEN + dt.timedelta(minutes=15), link_minutes=15,
            ),
        ),
        CardSample(
            "register-export-no-links-broken-chain",
            "register_export_card",
            lambda lang: cards.register_export_card(
                lang, protocols=[dataclasses.replace(REGISTER_VIEW, csv_url="", json_url="")], chain_entries=1391,
                chain_problems=2, first_problem_seq=1187, links_until=None, link_minutes=15,
            ),
        ),
    ]


def samples() -> list[CardSample]:
    """Every sample, the main one of each card function first."""
    fixed = [
        CardSample("welcome", "welcome_card", cards.welcome_card, in_docs=True),
        CardSample("welcome-shared", "shared_welcome_card", cards.shared_welcome_card),
        CardSample("correction-start", "correction_start_card",
                   lambda lang: cards.correction_start_card(lang, reference=REFERENCE, recipient=RECIPIENT)),
        *(CardSample(f"confirm-{kind}", "confirm_card", _confirm(kind)) for kind in sorted(cards.CONFIRMATIONS)),
        CardSample(
            "personal-chat",
            "personal_chat_card",
            lambda lang: cards.personal_chat_card(lang, chat_url=PERSONAL_CHAT_URL),
        ),
        CardSample(
            "personal-chat-no-link", "personal_chat_card", lambda lang: cards.personal_chat_card(lang, chat_url="")
        ),
        CardSample(
            "consent",
            "consent_card",
            lambda lang: cards.consent_card(
                lang, draft_id=DRAFT_ID, protocols=PROTOCOLS, selected=None, ticked={}, missing=()
            ),
            in_docs=True,
        ),
        CardSample(
            "consent-missing",
            "consent_card",
            lambda lang: cards.consent_card(
                lang,
                draft_id=DRAFT_ID,
                protocols=TWO_PROTOCOLS,
                selected=None,
                ticked={"informedData": True, "informedRecipient": True},
                missing=("ocmw", "informedPurpose", "informedFollowUp", "consentGiven"),
            ),
        ),
        CardSample(
            "consent-ending",
            "consent_card",
            lambda lang: cards.consent_card(
                lang, draft_id=DRAFT_ID, protocols=PROTOCOLS, selected=None, ticked={}, missing=(),
                ending=[(RECIPIENT, dt.date(2027, 8, 31))],
            ),
        ),
        CardSample(
            "details",
            "details_card",
            lambda lang: cards.details_card(
                lang, draft_id=DRAFT_ID, recipient=RECIPIENT, municipality=MUNICIPALITY, values={}, errors={}
            ),
            in_docs=True,
        ),
        CardSample(
            "details-errors",
            "details_card",
            lambda lang: cards.details_card(
                lang,
                draft_id=DRAFT_ID,
                recipient=RECIPIENT,
                municipality=MUNICIPALITY,
                values=TYPED_WITH_ERRORS,
                errors=FIELD_ERRORS,
            ),
            in_docs=True,
        ),
        CardSample(
            "review",
            "review_card",
            lambda lang: cards.review_card(
                lang, draft_id=DRAFT_ID, recipient=RECIPIENT, mailbox=MAILBOX, client=CLIENT,
                details_fingerprint=FINGERPRINT,
            ),
            in_docs=True,
        ),
        CardSample(
            "review-changed",
            "review_card",
            lambda lang: cards.review_card(
                lang, draft_id=DRAFT_ID, recipient=RECIPIENT, mailbox=MAILBOX, client=CLIENT,
                details_fingerprint=FINGERPRINT, changed=True,
            ),
        ),
        CardSample(
            "sent",
            "sent_card",
            lambda lang: cards.sent_card(lang, reference=REFERENCE, recipient=RECIPIENT, mailbox=MAILBOX, sent_at=WHEN),
            in_docs=True,
        ),
        CardSample(
            "queued",
            "queued_card",
            lambda lang: cards.queued_card(
                lang, reference=REFERENCE, recipient=RECIPIENT, mailbox=MAILBOX, queued_at=WHEN
            ),
            in_docs=True,
        ),
        CardSample(
            "cancelled", "cancelled_card", lambda lang: cards.cancelled_card(lang, reference=REFERENCE), in_docs=True
        ),
        CardSample("cancelled-no-reference", "cancelled_card", cards.cancelled_card),
        CardSample(
            "notice-withdrawal",
            "notice_card",
            lambda lang: cards.notice_card(lang, cards.text(lang, "withdrawal_recorded", reference=REFERENCE)),
        ),
        CardSample(
            "breach-report",
            "breach_report_card",
            lambda lang: cards.breach_report_card(lang, report_id=BREACH_ID,
                                                  protocols=[(p.id, p.recipient) for p in PROTOCOLS],
                                                  today=WHEN.date(), values={}, errors={}),
        ),
        CardSample(
            "breach-report-errors",
            "breach_report_card",
            lambda lang: cards.breach_report_card(lang, report_id=BREACH_ID,
                                                  protocols=[(p.id, p.recipient) for p in TWO_PROTOCOLS],
                                                  today=WHEN.date(), values=BREACH_TYPED, errors=BREACH_ERRORS),
        ),
        CardSample("breach-reported", "breach_reported_card",
                   lambda lang: cards.breach_reported_card(lang, BREACH_REPORTED)),
        CardSample(
            "breach-reported-late-unknown",
            "breach_reported_card",
            lambda lang: cards.breach_reported_card(lang, dataclasses.replace(
                BREACH_REPORTED, deadline_state="passed", hours=5, known_references=0,
                unknown_references=("VD-20261101-AAAAAA",), families=None, packages=None, already_reported=True)),
        ),
        CardSample(
            "problem-send-failed-retry",
            "problem_card",
            lambda lang: cards.problem_card(lang, "send_failed", reference=REFERENCE, minutes="30",
                                            draft_id=DRAFT_ID, details_fingerprint=FINGERPRINT),
        ),
        CardSample(
            "problem-password-unavailable-retry",
            "problem_card",
            lambda lang: cards.problem_card(lang, "password_unavailable", reference=REFERENCE, minutes="30",
                                            draft_id=DRAFT_ID, details_fingerprint=FINGERPRINT),
        ),
    ]
    problems = [
        CardSample(
            f"problem-{problem.replace('_', '-')}",
            "problem_card",
            _problem(problem),
            in_docs=problem == "protocol_not_in_force",
        )
        for problem in cards.PROBLEMS
    ]
    return fixed + problems + _follow_up_samples()


def card_functions() -> list[str]:
    """The public card functions of `cards` (every `*_card` name it exports)."""
    return sorted(name for name in cards.__all__ if name.endswith("_card") and callable(getattr(cards, name)))


def missing_samples() -> list[str]:
    """Card functions without a sample: each one is a card nobody validates or pictures."""
    covered = {sample.function for sample in samples()}
    return [name for name in card_functions() if name not in covered]


def every_card() -> Iterator[tuple[CardSample, cards.Language, Card]]:
    """Every sample in every language, built."""
    for sample in samples():
        for lang in cards.LANGUAGES:
            yield sample, lang, sample.card(lang)
