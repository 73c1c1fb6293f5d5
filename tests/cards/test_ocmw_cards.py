"""The cards after "send": the OCMW's card per package, status lists, corrections, channel linking."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

import cards
from bot.core.referral_values import FieldError
from cards._template import TemplateError, load_part, part_names, placeholders
from cards._texts import catalogue, text_params
from tests.support.card_reading import all_actions as actions
from tests.support.card_reading import assert_complete_card, walk

REFERENCE = "KG-2026-0042"
CORRECTION = "KG-2026-0057"
RECIPIENT = "OCMW Sint-Gillis-Waas"
TEAM = "Kind en Gezin team Noord-Oost Waasland"
MAILBOX = "welzijnshuis@sint-gillis-waas.be"
MUNICIPALITY = "Sint-Gillis-Waas"
KEY_VERSION = "2026-1"
CORRECTION_ID = "corr-91b2"
CODE = "K7M2-QX9P"
BRUSSELS = dt.timezone(dt.timedelta(hours=1))
SENT = dt.datetime(2026, 3, 2, 14, 5, tzinfo=BRUSSELS)
ACKED = dt.datetime(2026, 3, 3, 9, 12, tzinfo=BRUSSELS)
OUTCOME_AT = dt.datetime(2026, 3, 9, 16, 40, tzinfo=BRUSSELS)
DELETED = dt.datetime(2026, 3, 10, 8, 3, tzinfo=BRUSSELS)
ACKER = "Els Peeters"
WORKER = "Tom De Smet"
MALICIOUS = "**x** [y](http://z)"
LIMIT_BYTES = 40 * 1024

OUTCOME_OF_STATE = {
    "help_wanted": "contact_help_wanted",
    "no_help_wanted": "contact_no_help_wanted",
    "unreachable": "unreachable",
}


def view(state: cards.OcmwState = "sent", **overrides: Any) -> cards.OcmwReferralView:
    """A view in `state` with exactly the who/when that state has."""
    fields: dict[str, Any] = {
        "reference": REFERENCE,
        "sent_at": SENT,
        "sender_team": TEAM,
        "recipient": RECIPIENT,
        "mailbox": MAILBOX,
        "key_version": KEY_VERSION,
        "state": state,
    }
    if state != "sent":
        fields.update(acknowledged_by=ACKER, acknowledged_at=ACKED)
    if state in OUTCOME_OF_STATE or state == "data_deleted":
        fields.update(outcome_by=WORKER, outcome_at=OUTCOME_AT)
    if state == "data_deleted":
        fields.update(deleted_by=WORKER, deleted_at=DELETED)
    fields.update(overrides)
    return cards.OcmwReferralView(**fields)


def ocmw_card(lang: cards.Language = "nl", state: cards.OcmwState = "sent", **overrides: Any) -> dict[str, Any]:
    return cards.ocmw_referral_card(lang, view(state, **overrides))




def inputs(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [node for node in walk(card) if str(node.get("type", "")).startswith("Input.")]


def texts(card: dict[str, Any]) -> list[str]:
    return [node["text"] for node in walk(card) if node.get("type") == "TextBlock"]


def facts(card: dict[str, Any]) -> dict[str, str]:
    factset = next(node for node in walk(card) if node.get("type") == "FactSet")
    return {fact["title"]: fact["value"] for fact in factset["facts"]}


def serialized(card: dict[str, Any]) -> str:
    return json.dumps(card, ensure_ascii=False)


def shape(node: Any) -> Any:
    """The card without its words: what must be identical in Dutch and English."""
    if isinstance(node, dict):
        return {k: shape(v) for k, v in node.items() if k not in {"text", "title", "label", "placeholder", "value"}}
    if isinstance(node, list):
        return [shape(item) for item in node]
    return node


# -- every card --------------------------------------------------------------------------------

CardFactory = Callable[[cards.Language], dict[str, Any]]

ROWS = [
    cards.StatusRow(f"KG-2026-{n:04d}", RECIPIENT, state, SENT, SENT, ACKED, None)
    for n, state in enumerate(cards.STATUS_STATES)
]


def _correction_factory(item: cards.ReferralItem) -> CardFactory:
    def factory(lang: cards.Language) -> dict[str, Any]:
        return cards.correction_request_card(
            lang,
            correction_id=CORRECTION_ID,
            reference=REFERENCE,
            item=item,
            recipient=RECIPIENT,
            municipality=MUNICIPALITY,
            values={},
            errors={},
        )

    return factory


def quality(reference: str) -> list[dict[str, str]]:
    """The two report buttons (article 7): an item wrong, an item not needed."""
    return [{"reference": reference}, {"reference": reference, "kind": "superfluous"}]


# name -> (factory, {verb: [data of each action with that verb]})
CARDS: dict[str, tuple[CardFactory, dict[str, list[dict[str, str]]]]] = {
    "ocmw_sent": (
        lambda lang: ocmw_card(lang, "sent"),
        {cards.VERB_ACKNOWLEDGE: [{"reference": REFERENCE}], cards.VERB_QUALITY: quality(REFERENCE)},
    ),
    "ocmw_received": (
        lambda lang: ocmw_card(lang, "received"),
        {
            cards.VERB_OUTCOME: [{"reference": REFERENCE, "outcome": outcome} for outcome in cards.OUTCOMES],
            cards.VERB_QUALITY: quality(REFERENCE),
        },
    ),
    "ocmw_help_wanted": (
        lambda lang: ocmw_card(lang, "help_wanted"),
        {cards.VERB_DELETED: [{"reference": REFERENCE}], cards.VERB_QUALITY: quality(REFERENCE)},
    ),
    "ocmw_no_help_wanted": (
        lambda lang: ocmw_card(lang, "no_help_wanted"),
        {cards.VERB_DELETED: [{"reference": REFERENCE}], cards.VERB_QUALITY: quality(REFERENCE)},
    ),
    "ocmw_unreachable": (
        lambda lang: ocmw_card(lang, "unreachable"),
        {
            cards.VERB_DELETED: [{"reference": REFERENCE}],
            cards.VERB_QUALITY: quality(REFERENCE),
            cards.VERB_OUTCOME: [{"reference": REFERENCE, "outcome": outcome}
                                 for outcome in ("contact_help_wanted", "contact_no_help_wanted")],
        },
    ),
    "ocmw_data_deleted": (lambda lang: ocmw_card(lang, "data_deleted"), {}),
    "ocmw_consent_withdrawn": (
        lambda lang: ocmw_card(lang, "consent_withdrawn"),
        {cards.VERB_DELETED: [{"reference": REFERENCE}]},
    ),
    "ocmw_consent_withdrawn_before_receipt": (
        lambda lang: ocmw_card(lang, "consent_withdrawn", acknowledged_by=None, acknowledged_at=None),
        {cards.VERB_DELETED: [{"reference": REFERENCE}]},
    ),
    "ocmw_correction_received": (
        lambda lang: ocmw_card(
            lang, "received", reference=CORRECTION, correction_of=REFERENCE, corrected_item="address"
        ),
        {cards.VERB_QUALITY: quality(CORRECTION)},
    ),
    "ocmw_notice": (
        lambda lang: ocmw_card(lang, "sent", notice="quality_item_missing", reported_items=("phone",)),
        {cards.VERB_ACKNOWLEDGE: [{"reference": REFERENCE}], cards.VERB_QUALITY: quality(REFERENCE)},
    ),
    "status_referrer": (
        lambda lang: cards.referral_status_card(lang, audience="referrer", rows=ROWS),
        {cards.VERB_START: [{}]},
    ),
    "status_referrer_empty": (
        lambda lang: cards.referral_status_card(lang, audience="referrer", rows=[]),
        {cards.VERB_START: [{}]},
    ),
    "status_ocmw": (lambda lang: cards.referral_status_card(lang, audience="ocmw", rows=ROWS), {}),
    "status_ocmw_empty": (lambda lang: cards.referral_status_card(lang, audience="ocmw", rows=[]), {}),
    **{
        f"correction_request_{item}": (
            _correction_factory(item),
            {
                cards.VERB_CORRECTION_SUBMIT: [{"correctionId": CORRECTION_ID}],
                cards.VERB_CORRECTION_LATER: [{"correctionId": CORRECTION_ID}],
                **({cards.VERB_CORRECTION_NONE: [{"correctionId": CORRECTION_ID}]}
                   if item in cards.ITEMS_WITHOUT_VALUE else {}),
            },
        )
        for item in cards.REFERRAL_ITEMS
    },
    "correction_queued": (
        lambda lang: cards.correction_queued_card(
            lang, reference=CORRECTION, corrected_item="phone", recipient=RECIPIENT, queued_at=SENT
        ),
        {},
    ),
    "link_confirm": (
        lambda lang: cards.link_confirm_card(lang, ocmw=RECIPIENT, code=CODE),
        {cards.VERB_LINK_CONFIRM: [{"code": CODE}], cards.VERB_LINK_CANCEL: [{}]},
    ),
}


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("name", sorted(CARDS))
def test_card_is_a_complete_adaptive_card_1_5(lang: cards.Language, name: str) -> None:
    card = CARDS[name][0](lang)
    text = assert_complete_card(card)
    assert not re.search(r"\{[a-z_]+\}", text), "unfilled text parameter"


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("name", sorted(CARDS))
def test_only_action_execute_with_the_documented_verbs_and_data(lang: cards.Language, name: str) -> None:
    factory, expected = CARDS[name]
    found: dict[str, list[dict[str, str]]] = {}
    for action in actions(factory(lang)):
        assert action["type"] == "Action.Execute"
        assert action["title"]
        found.setdefault(action["verb"], []).append(action["data"])
    assert found == expected


@pytest.mark.parametrize("name", sorted(CARDS))
def test_dutch_and_english_cards_differ_only_in_text(name: str) -> None:
    factory = CARDS[name][0]
    assert shape(factory("nl")) == shape(factory("en"))
    assert factory("nl") != factory("en")


def test_follow_up_verbs() -> None:
    assert {
        "ack.receive", "referral.outcome", "referral.quality", "referral.deleted",
        "correction.submit", "correction.later", "correction.none", "link.confirm", "link.cancel", "correction.start",
        "correction.open",
    } == cards.FOLLOW_UP_VERBS  # fmt: skip
    assert not cards.FOLLOW_UP_VERBS & cards.VERBS


def test_every_template_placeholder_and_part_is_known() -> None:
    assert "status_row" in part_names()
    for part in part_names():
        keys = {p.removeprefix("t.") for p in placeholders(load_part(part)) if p.startswith("t.")}
        for lang in cards.LANGUAGES:
            assert keys <= set(catalogue(lang)), part
    with pytest.raises(TemplateError):
        load_part("../ocmw_referral")


# -- the OCMW's card: always ---------------------------------------------------------------------


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("state", cards.OCMW_STATES)
def test_ocmw_card_always_says_what_where_and_how_to_open(lang: cards.Language, state: cards.OcmwState) -> None:
    card = ocmw_card(lang, state)
    assert card["body"][0]["text"] == cards.text(lang, "ocmw.title", reference=REFERENCE)
    assert card["body"][0]["style"] == "heading"
    assert list(facts(card).values()) == [REFERENCE, "02/03/2026 14:05", TEAM, MAILBOX, KEY_VERSION]
    how = cards.text(lang, "ocmw.open", reference=REFERENCE, mailbox=MAILBOX, key_version=KEY_VERSION)
    assert how in texts(card)


def test_ocmw_card_texts_in_dutch() -> None:
    card = ocmw_card("nl", "sent")
    assert card["body"][0]["text"] == "Nieuwe doorverwijzing KG-2026-0042"
    assert list(facts(card)) == ["Referentie", "Verstuurd op", "Van", "Mailbox", "Sleutelversie"]
    assert (
        "Open de bijlage KG-2026-0042.zip in de mailbox welzijnshuis@sint-gillis-waas.be met 7-Zip (Windows "
        "Verkenner kan dit niet). Het wachtwoord is het afgesproken wachtwoord voor dit protocol, sleutelversie "
        "2026-1. Typ of plak het zonder spaties en met de hoofdletters zoals afgesproken: de groepjes van vier zijn "
        "er alleen om voor te lezen."
    ) in texts(card)


def test_ocmw_card_in_english_says_to_type_the_password_without_spaces() -> None:
    """Read out in groups of four, typed with those spaces: 7-Zip answers "Wrong password"."""
    card = ocmw_card("en", "sent")
    assert any("Type or paste it without spaces and with capitals as agreed: the groups of four are only for reading "
               "it out." in text for text in texts(card))


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("item", cards.REFERRAL_ITEMS)
def test_ocmw_card_for_a_correction_says_only_the_corrected_item_is_in_it(
    lang: cards.Language, item: cards.ReferralItem
) -> None:
    card = ocmw_card(lang, "sent", reference=CORRECTION, correction_of=REFERENCE, corrected_item=item)
    label = cards.text(lang, f"item.{item}.label")
    assert card["body"][0]["text"] == cards.text(
        lang, "ocmw.title_correction", reference=CORRECTION, correction_of=REFERENCE, item=label
    )
    only = card["body"][1]["text"]
    assert only == cards.text(
        lang, "ocmw.correction.text", item=cards.text(lang, f"item.{item}.name"), correction_of=REFERENCE
    )
    assert ("alleen" if lang == "nl" else "only") in only
    assert facts(card)[cards.text(lang, "fact.reference")] == CORRECTION
    assert f"{CORRECTION}.zip" in serialized(card)


def test_ocmw_correction_title_in_dutch() -> None:
    card = ocmw_card("nl", "sent", reference=CORRECTION, correction_of=REFERENCE, corrected_item="address")
    assert card["body"][0]["text"] == "Correctie KG-2026-0057 voor KG-2026-0042: Adres"
    assert card["body"][1]["text"].startswith("De bijlage bevat alleen het verbeterde gegeven: het adres.")


# -- the OCMW's card: per state ------------------------------------------------------------------


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_ocmw_sent_asks_to_acknowledge_and_takes_a_report_already(lang: cards.Language) -> None:
    """Article 7 from delivery on: a wrong item can be reported before receipt is confirmed."""
    card = ocmw_card(lang, "sent")
    button, report, superfluous = actions(card)
    assert superfluous["data"] == {"reference": REFERENCE, "kind": "superfluous"}
    assert button["title"] == cards.text(lang, "action.acknowledge")
    assert button["associatedInputs"] == "none"
    assert report["verb"] == cards.VERB_QUALITY
    assert [e["id"] for e in inputs(card)] == ["item"]
    assert not any(cards.text(lang, "ocmw.acknowledged", name=ACKER, time="") in t for t in texts(card))


def test_ocmw_sent_button_in_dutch() -> None:
    assert [a["title"] for a in actions(ocmw_card("nl", "sent"))] == [
        "Ontvangst bevestigen", "Gegeven onjuist", "Gegeven overbodig",
    ]


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_ocmw_received_offers_outcomes_and_the_quality_report(lang: cards.Language) -> None:
    card = ocmw_card(lang, "received")
    assert cards.text(lang, "ocmw.acknowledged", name=ACKER, time="03/03/2026 09:12") in texts(card)
    outcome_buttons = [a for a in actions(card) if a["verb"] == cards.VERB_OUTCOME]
    assert [a["title"] for a in outcome_buttons] == [cards.text(lang, f"outcome.{o}") for o in cards.OUTCOMES]
    assert all(a["associatedInputs"] == "none" for a in outcome_buttons)
    (choice,) = inputs(card)
    assert choice["type"] == "Input.ChoiceSet"
    assert choice["id"] == "item"
    assert choice["value"] == ""
    assert "isMultiSelect" not in choice
    assert choice["choices"] == [
        {"title": cards.text(lang, f"item.{item}.label"), "value": item} for item in cards.REFERRAL_ITEMS
    ]
    quality, superfluous = [a for a in actions(card) if a["verb"] == cards.VERB_QUALITY]
    assert quality["title"] == cards.text(lang, "action.data_wrong")
    assert superfluous["title"] == cards.text(lang, "action.data_superfluous")
    assert "associatedInputs" not in quality and "associatedInputs" not in superfluous  # the item goes along


def test_ocmw_received_texts_in_dutch() -> None:
    card = ocmw_card("nl", "received")
    assert "Ontvangst bevestigd door Els Peeters op 03/03/2026 09:12" in texts(card)
    assert [a["title"] for a in actions(card)] == [
        "Contact gehad: wil hulp", "Contact gehad: wil geen hulp", "Niet bereikt", "Gegeven onjuist",
        "Gegeven overbodig",
    ]  # fmt: skip
    assert [c["title"] for c in inputs(card)[0]["choices"]] == ["Naam", "Adres", "Telefoonnummer", "E-mailadres"]
    assert any("artikel 7" in t for t in texts(card))


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("state", ["received", "help_wanted"])
def test_ocmw_card_shows_the_items_already_reported(lang: cards.Language, state: cards.OcmwState) -> None:
    card = ocmw_card(lang, state, reported_items=("phone", "name"))
    names = [cards.text(lang, "item.name.label"), cards.text(lang, "item.phone.label")]
    expected = cards.text(lang, "ocmw.quality.reported", items=f"{names[0]} {cards.text(lang, 'list.and')} {names[1]}")
    assert expected in texts(card)
    assert not any(
        t.startswith(cards.text(lang, "ocmw.quality.reported", items="")) for t in texts(ocmw_card(lang, state))
    )


def test_ocmw_reported_items_in_dutch() -> None:
    assert "Al gemeld: Adres" in texts(ocmw_card("nl", "received", reported_items=("address",)))


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_ocmw_help_wanted_files_the_data_and_empties_the_shared_mailbox(lang: cards.Language) -> None:
    card = ocmw_card(lang, "help_wanted")
    recorded = cards.text(
        lang,
        "ocmw.outcome.recorded",
        outcome=cards.text(lang, "outcome.contact_help_wanted"),
        name=WORKER,
        time="09/03/2026 16:40",
    )
    assert recorded in texts(card)
    assert cards.text(lang, "ocmw.help_wanted.text") in texts(card)
    assert cards.text(lang, "ocmw.delete.help_wanted", reference=REFERENCE) in texts(card)
    assert [a["verb"] for a in actions(card)] == [cards.VERB_DELETED, cards.VERB_QUALITY, cards.VERB_QUALITY]
    assert actions(card)[0]["title"] == cards.text(lang, "action.data_filed_and_deleted")
    assert [e["id"] for e in inputs(card)] == ["item"]


def test_ocmw_help_wanted_in_dutch() -> None:
    shown = texts(ocmw_card("nl", "help_wanted"))
    assert "Contact gehad: wil hulp (geregistreerd door Tom De Smet op 09/03/2026 16:40)" in shown
    assert (
        "Het OCMW maakt een dossier; bewaar de gegevens volgens de archiefregels voor sociale dossiers "
        "(10 jaar na afsluiten)."
    ) in shown


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("state", ["no_help_wanted", "unreachable"])
def test_ocmw_no_help_or_unreachable_asks_to_delete(lang: cards.Language, state: cards.OcmwState) -> None:
    card = ocmw_card(lang, state)
    outcome = cards.text(lang, f"outcome.{OUTCOME_OF_STATE[state]}")
    assert cards.text(lang, "ocmw.outcome.recorded", outcome=outcome, name=WORKER, time="09/03/2026 16:40") in texts(
        card
    )
    assert cards.text(lang, f"ocmw.delete.{state}") in texts(card)
    button, *rest = actions(card)
    assert button["title"] == cards.text(lang, "action.data_deleted")
    assert button["associatedInputs"] == "none"
    assert [a["verb"] for a in rest][-2:] == [cards.VERB_QUALITY] * 2, "a wrong item can be reported until deletion"
    after_all = [a["data"]["outcome"] for a in rest if a["verb"] == cards.VERB_OUTCOME]
    assert after_all == (["contact_help_wanted", "contact_no_help_wanted"] if state == "unreachable" else [])
    assert [e["id"] for e in inputs(card)] == ["item"]


def test_ocmw_delete_reminders_in_dutch() -> None:
    article_3 = (
        "Het protocol (artikel 3) laat de gegevens alleen bewaren tot er contact was en duidelijk is of hulp "
        "gewenst is."
    )
    no_help = texts(ocmw_card("nl", "no_help_wanted"))
    assert f"{article_3} Verwijder nu de mail en de bijlage." in no_help
    unreachable = next(t for t in texts(ocmw_card("nl", "unreachable")) if t.startswith(article_3))
    assert "niet kan bereiken" in unreachable and "Verwijder" in unreachable
    assert [a["title"] for a in actions(ocmw_card("nl", "unreachable"))] == [
        "Gegevens verwijderd", "Contact gehad: wil hulp", "Contact gehad: wil geen hulp", "Gegeven onjuist",
        "Gegeven overbodig",
    ]


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_ocmw_data_deleted_is_done(lang: cards.Language) -> None:
    card = ocmw_card(lang, "data_deleted")
    assert cards.text(lang, "ocmw.deleted", name=WORKER, time="10/03/2026 08:03") in texts(card)
    assert actions(card) == []
    assert inputs(card) == []
    assert cards.text(lang, "ocmw.leak") not in texts(card)


def test_ocmw_data_deleted_in_dutch() -> None:
    assert "Verwijdering bevestigd door Tom De Smet op 10/03/2026 08:03" in texts(ocmw_card("nl", "data_deleted"))


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_ocmw_consent_withdrawn_asks_to_delete(lang: cards.Language) -> None:
    card = ocmw_card(lang, "consent_withdrawn")
    assert cards.text(lang, "ocmw.delete.consent_withdrawn") in texts(card)
    assert [a["verb"] for a in actions(card)] == [cards.VERB_DELETED]
    assert inputs(card) == []
    assert "De ouders hebben hun toestemming ingetrokken. Verwijder de mail en de bijlage en bevestig." in texts(
        ocmw_card("nl", "consent_withdrawn")
    )


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("state", cards.OCMW_STATES)
def test_ocmw_leak_reminder_while_the_ocmw_holds_data(lang: cards.Language, state: cards.OcmwState) -> None:
    card = ocmw_card(lang, state)
    assert (cards.text(lang, "ocmw.leak") in texts(card)) == (state != "data_deleted")


# -- notices -------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize(
    ("notice", "color"),
    [
        ("already_acknowledged", "accent"),
        ("quality_item_missing", "attention"),
        ("quality_reported", "good"),
        ("quality_reported_protocol_ended", "warning"),
        ("outcome_already_recorded", "accent"),
        ("deletion_recorded", "good"),
    ],
)
def test_notice_is_highlighted_right_under_the_title(lang: cards.Language, notice: str, color: str) -> None:
    assert set(cards.NOTICES) >= {notice}
    card = ocmw_card(lang, "received", notice=notice)
    block = card["body"][1]
    assert block["type"] == "TextBlock"
    assert block["color"] == color
    assert block["weight"] == "Bolder"
    if notice == "already_acknowledged":
        assert block["text"] == cards.text(lang, f"notice.{notice}", name=ACKER, time="03/03/2026 09:12")
    elif notice == "quality_reported_protocol_ended":  # whom to contact: the sending team
        assert block["text"] == cards.text(lang, f"notice.{notice}", team=TEAM)
    else:
        assert block["text"] == cards.text(lang, f"notice.{notice}")


def test_without_notice_the_facts_follow_the_title() -> None:
    assert ocmw_card("nl", "received")["body"][1]["type"] == "FactSet"


def test_notice_texts_in_dutch() -> None:
    assert ocmw_card("nl", "received", notice="already_acknowledged")["body"][1]["text"] == (
        "De ontvangst was al bevestigd door Els Peeters op 03/03/2026 09:12. Je hoeft niets meer te doen."
    )
    missing = ocmw_card("nl", "received", notice="quality_item_missing")["body"][1]["text"]
    assert "Gegeven onjuist" in missing and "Gegeven overbodig" in missing  # either button needs an item


# -- escaping and refusals -----------------------------------------------------------------------


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize(
    ("state", "overrides"),
    [
        ("received", {"acknowledged_by": MALICIOUS}),
        ("received", {"acknowledged_by": MALICIOUS, "notice": "already_acknowledged"}),
        ("help_wanted", {"outcome_by": MALICIOUS}),
        ("unreachable", {"outcome_by": MALICIOUS}),
        ("data_deleted", {"deleted_by": MALICIOUS}),
    ],
)
def test_display_names_are_escaped(lang: cards.Language, state: cards.OcmwState, overrides: dict[str, Any]) -> None:
    card = ocmw_card(lang, state, **overrides)
    text = serialized(card)
    assert MALICIOUS not in text
    assert "[y](http://z)" not in text
    escaped = cards.escape_markdown(MALICIOUS)
    assert escaped == r"\*\*x\*\* \[y\]\(http://z\)"
    assert any(escaped in t for t in texts(card))


@pytest.mark.parametrize(
    ("state", "overrides"),
    [
        ("received", {"acknowledged_by": None, "acknowledged_at": None}),
        ("received", {"acknowledged_at": None}),
        ("help_wanted", {"outcome_by": None, "outcome_at": None}),
        ("no_help_wanted", {"outcome_at": None}),
        ("data_deleted", {"deleted_by": None, "deleted_at": None}),
        ("sent", {"notice": "already_acknowledged"}),
        ("sent", {"notice": "it_is_fine"}),
        ("sent", {"correction_of": REFERENCE}),
        ("sent", {"corrected_item": "phone"}),
        ("sent", {"correction_of": REFERENCE, "corrected_item": "iban"}),
        ("received", {"reported_items": ("phone", "notes")}),
        ("lost", {}),
    ],
)
def test_ocmw_card_refuses_an_inconsistent_view(state: Any, overrides: dict[str, Any]) -> None:
    with pytest.raises(cards.CardError):
        ocmw_card("nl", state, **overrides)


def test_view_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        view().state = "received"  # type: ignore[misc]


# -- status list ---------------------------------------------------------------------------------

DUTCH_STATE_LABELS = {
    "queued": "in wachtrij",
    "sent": "verstuurd",
    "failed": "NIET verstuurd",
    "received": "ontvangst bevestigd",
    "help_wanted": "uitkomst: wil hulp",
    "no_help_wanted": "uitkomst: wil geen hulp",
    "unreachable": "uitkomst: niet bereikt",
    "data_deleted": "gegevens verwijderd",
    "consent_withdrawn": "toestemming ingetrokken",
}


def status_rows(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [node for node in walk(card) if node.get("type") == "ColumnSet"]


def row_state(row: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = row["columns"][-1]["items"][0]
    return block


def row(state: str, n: int = 1, outcome: str | None = None, **overrides: Any) -> cards.StatusRow:
    values: dict[str, Any] = {
        "reference": f"KG-2026-{n:04d}",
        "recipient": RECIPIENT,
        "state": state,
        "queued_at": SENT,
        "sent_at": None,
        "acknowledged_at": None,
        "outcome": outcome,
    }
    values.update(overrides)
    return cards.StatusRow(**values)


def test_status_states_are_the_documented_ones() -> None:
    assert set(cards.STATUS_STATES) == set(DUTCH_STATE_LABELS)
    assert set(cards.OCMW_STATES) <= set(cards.STATUS_STATES)


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("state", cards.STATUS_STATES)
def test_status_row_shows_the_state_label(lang: cards.Language, state: str) -> None:
    card = cards.referral_status_card(lang, audience="referrer", rows=[row(state)])
    (shown,) = status_rows(card)
    assert row_state(shown)["text"] == cards.text(lang, f"status.state.{state}")
    if lang == "nl":
        assert row_state(shown)["text"] == DUTCH_STATE_LABELS[state]
    assert (row_state(shown)["color"] == "attention") == (state == "failed")


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("audience", ["referrer", "ocmw"])
def test_status_titles_and_empty_list(lang: cards.Language, audience: Any) -> None:
    card = cards.referral_status_card(lang, audience=audience, rows=[])
    assert card["body"][0]["text"] == cards.text(lang, f"status.title.{audience}")
    assert card["body"][1]["text"] == cards.text(lang, f"status.empty.{audience}")
    assert status_rows(card) == []
    full = cards.referral_status_card(lang, audience=audience, rows=ROWS)
    assert cards.text(lang, f"status.empty.{audience}") not in texts(full)


def test_status_titles_in_dutch() -> None:
    assert cards.referral_status_card("nl", audience="referrer", rows=[])["body"][0]["text"] == "Mijn doorverwijzingen"
    assert cards.referral_status_card("nl", audience="ocmw", rows=[])["body"][0]["text"] == (
        "Openstaande doorverwijzingen"
    )


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize(("count", "hidden"), [(1, 0), (29, 0), (30, 0), (31, 1), (250, 220)])
def test_status_shows_at_most_30_rows_and_counts_the_rest(lang: cards.Language, count: int, hidden: int) -> None:
    rows = [
        row(cards.STATUS_STATES[n % len(cards.STATUS_STATES)], n, sent_at=SENT, acknowledged_at=ACKED)
        for n in range(count)
    ]
    card = cards.referral_status_card(lang, audience="referrer", rows=rows)
    shown = status_rows(card)
    assert len(shown) == min(count, cards.STATUS_MAX_ROWS) == count - hidden
    assert [r["columns"][0]["items"][0]["text"] for r in shown] == [r.reference for r in rows[: len(shown)]]
    more = cards.text(lang, "status.more", shown="30", count=str(hidden))
    assert (more in texts(card)) == bool(hidden)
    assert len(serialized(card).encode("utf-8")) < LIMIT_BYTES


@pytest.mark.parametrize(("passed", "total", "hidden"), [(30, 90, 60), (30, 30, 0), (12, 12, 0), (31, 20, 1)])
def test_status_counts_what_it_leaves_out_of_the_total_when_given_only_the_first(
    passed: int, total: int, hidden: int
) -> None:
    """The referrer's list is read 30 at a time: the rest is counted from `total`, never below what was passed."""
    card = cards.referral_status_card("nl", audience="referrer", rows=[row("sent", n) for n in range(passed)],
                                      total=total)
    shown = len(status_rows(card))
    assert shown == min(passed, cards.STATUS_MAX_ROWS)
    assert (cards.text("nl", "status.more", shown=str(shown), count=str(hidden)) in texts(card)) == bool(hidden)
    assert not hidden or f"nog {hidden} niet getoond" in " ".join(texts(card))


def test_status_more_in_dutch() -> None:
    rows = [row("sent", n) for n in range(31)]
    assert "Hier staan de eerste 30; nog 1 niet getoond." in texts(
        cards.referral_status_card("nl", audience="ocmw", rows=rows)
    )


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_status_row_times_and_recipient(lang: cards.Language) -> None:
    card = cards.referral_status_card(
        lang, audience="referrer", rows=[row("received", sent_at=SENT, acknowledged_at=ACKED)]
    )
    (shown,) = status_rows(card)
    lines = [block["text"] for block in shown["columns"][0]["items"]]
    assert lines[:2] == ["KG-2026-0001", RECIPIENT]
    assert lines[2] == " · ".join(
        [
            cards.text(lang, "status.time.queued", time="02/03/2026 14:05"),
            cards.text(lang, "status.time.sent", time="02/03/2026 14:05"),
            cards.text(lang, "status.time.acknowledged", time="03/03/2026 09:12"),
        ]
    )
    queued_only = status_rows(cards.referral_status_card(lang, audience="referrer", rows=[row("queued")]))[0]
    assert queued_only["columns"][0]["items"][2]["text"] == cards.text(
        lang, "status.time.queued", time="02/03/2026 14:05"
    )


def test_status_for_the_ocmw_leaves_out_its_own_name_and_the_start_button() -> None:
    card = cards.referral_status_card("nl", audience="ocmw", rows=[row("sent")])
    assert RECIPIENT not in serialized(card)
    assert actions(card) == []
    referrer = cards.referral_status_card("nl", audience="referrer", rows=[row("sent")])
    assert [a["title"] for a in actions(referrer)] == ["Nieuwe doorverwijzing"]


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_status_row_adds_the_outcome_when_the_state_does_not_say_it(lang: cards.Language) -> None:
    deleted = status_rows(
        cards.referral_status_card(lang, audience="referrer", rows=[row("data_deleted", outcome="unreachable")])
    )[0]
    assert row_state(deleted)["text"] == cards.text(
        lang,
        "status.state_with_outcome",
        state=cards.text(lang, "status.state.data_deleted"),
        outcome=cards.text(lang, "status.outcome.unreachable"),
    )
    help_wanted = status_rows(
        cards.referral_status_card(lang, audience="referrer", rows=[row("help_wanted", outcome="contact_help_wanted")])
    )[0]
    assert row_state(help_wanted)["text"] == cards.text(lang, "status.state.help_wanted")


def test_status_row_with_outcome_in_dutch() -> None:
    card = cards.referral_status_card(
        "nl", audience="referrer", rows=[row("data_deleted", outcome="contact_no_help_wanted")]
    )
    assert row_state(status_rows(card)[0])["text"] == "gegevens verwijderd (wil geen hulp)"


def test_status_refuses_unknown_states_outcomes_and_audiences() -> None:
    with pytest.raises(cards.CardError):
        cards.referral_status_card("nl", audience="referrer", rows=[row("lost")])
    with pytest.raises(cards.CardError):
        cards.referral_status_card("nl", audience="referrer", rows=[row("data_deleted", outcome="maybe")])
    with pytest.raises(cards.CardError):
        cards.referral_status_card("nl", audience="team", rows=[])  # type: ignore[arg-type]


# -- correction request --------------------------------------------------------------------------


def correction(lang: cards.Language = "nl", item: cards.ReferralItem = "phone", **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "correction_id": CORRECTION_ID,
        "reference": REFERENCE,
        "item": item,
        "recipient": RECIPIENT,
        "municipality": MUNICIPALITY,
        "values": {},
        "errors": {},
    }
    arguments.update(overrides)
    return cards.correction_request_card(lang, **arguments)


def details(lang: cards.Language, **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "draft_id": "draft-1",
        "recipient": RECIPIENT,
        "municipality": MUNICIPALITY,
        "values": {},
        "errors": {},
    }
    arguments.update(overrides)
    return cards.details_card(lang, **arguments)


def element_after(card: dict[str, Any], input_id: str) -> dict[str, Any]:
    """The element right after the input `input_id` in the same list, or {} when it is the last."""
    for node in walk(card):
        for key in ("body", "items"):
            elements = node.get(key)
            if isinstance(elements, list):
                for index, element in enumerate(elements):
                    if isinstance(element, dict) and element.get("id") == input_id:
                        return elements[index + 1] if index + 1 < len(elements) else {}
    raise AssertionError(input_id)


def test_item_fields_split_the_details_fields() -> None:
    assert dict(cards.ITEM_FIELDS) == {
        "name": ("firstName", "lastName"),
        "address": ("street", "houseNumber", "postalCode", "municipality"),
        "phone": ("phone",),
        "email": ("email",),
    }
    assert tuple(cards.ITEM_FIELDS) == cards.REFERRAL_ITEMS
    assert [f for fields in cards.ITEM_FIELDS.values() for f in fields] == list(cards.DETAIL_FIELDS)


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("item", cards.REFERRAL_ITEMS)
def test_correction_inputs_are_exactly_the_items_fields_as_on_the_details_card(
    lang: cards.Language, item: cards.ReferralItem
) -> None:
    typed = {field: f"typed {field}" for field in cards.DETAIL_FIELDS}
    card = correction(lang, item, values=typed)
    found = inputs(card)
    assert [e["id"] for e in found] == list(cards.ITEM_FIELDS[item])
    on_details = {e["id"]: e for e in inputs(details(lang, values=typed))}
    for element in found:
        assert element == on_details[element["id"]]
        assert element["value"] == f"typed {element['id']}"
        assert element["maxLength"] == cards.FIELD_MAX_LENGTHS[element["id"]]


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("item", cards.REFERRAL_ITEMS)
def test_correction_says_who_reports_what(lang: cards.Language, item: cards.ReferralItem) -> None:
    card = correction(lang, item)
    request = cards.text(
        lang,
        "correction.request.text",
        recipient=RECIPIENT,
        item=cards.text(lang, f"item.{item}.name"),
        reference=REFERENCE,
    )
    assert request in texts(card)
    area = cards.text(lang, "details.area", municipality=MUNICIPALITY, recipient=RECIPIENT)
    assert (area in texts(card)) == (item == "address")
    later, submit = card["actions"][1], card["actions"][0]
    assert later["associatedInputs"] == "none"
    assert "associatedInputs" not in submit
    assert [a["title"] for a in card["actions"]] == [
        cards.text(lang, "action.correction_submit"),
        cards.text(lang, "action.later"),
    ]
    # Below the field, on a row of its own (a third button in the row cut every title short in Teams):
    none = [a for a in actions(card) if a["verb"] == cards.VERB_CORRECTION_NONE]
    assert [a["title"] for a in none] == ([cards.text(lang, "action.correction_none", item=cards.item_word(lang, item))]
                                          if item in cards.ITEMS_WITHOUT_VALUE else [])
    assert all(a["associatedInputs"] == "none" for a in none), "no typed value goes with it"


def test_correction_texts_in_dutch() -> None:
    card = correction("nl", "phone")
    assert (
        "OCMW Sint-Gillis-Waas meldt dat het telefoonnummer van doorverwijzing KG-2026-0042 niet klopt (artikel 7 "
        "van het protocol). Vul het juiste gegeven in: alleen dit gegeven wordt opnieuw versleuteld verstuurd."
    ) in texts(card)
    assert [a["title"] for a in actions(card)] == ["Er is geen juist telefoonnummer", "Correctie versturen", "Niet nu"]
    assert "Heeft het gezin geen (ander) telefoonnummer, of wil het dat niet geven?" in texts(card)
    assert [a["title"] for a in actions(correction("nl", "address"))] == ["Correctie versturen", "Niet nu"]


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_correction_errors_come_right_after_their_input(lang: cards.Language) -> None:
    errors = {
        "houseNumber": FieldError("house_number_format"),
        "postalCode": FieldError(
            "postal_code_outside_area",
            (("municipality", MUNICIPALITY), ("ocmw", RECIPIENT), ("places", MUNICIPALITY), ("accepted", "9170")),
        ),
    }
    card = correction(lang, "address", errors=errors)
    for field in cards.ITEM_FIELDS["address"]:
        after = element_after(card, field)
        if field in errors:
            assert after["type"] == "TextBlock" and after["color"] == "attention"
            assert after["text"] == cards.field_error_text(lang, field, errors[field])
        else:
            assert after.get("color") != "attention", field
    summary = card["body"][1]
    assert summary["color"] == "attention"
    assert all(cards.text(lang, f"field.{field}.name") in summary["text"] for field in errors)
    red = [n for n in walk(card) if n.get("type") == "TextBlock" and n.get("color") == "attention"]
    assert len(red) == len(errors) + 1
    assert not any(n.get("color") == "attention" for n in walk(correction(lang, "address")))


def test_correction_refuses_errors_for_other_fields_and_unknown_items() -> None:
    with pytest.raises(cards.CardError):
        correction(item="phone", errors={"email": FieldError("email_invalid")})
    with pytest.raises(cards.CardError):
        correction(item="phone", errors={"phone": FieldError("phone_weird")})
    with pytest.raises(cards.CardError):
        correction(item="iban")  # type: ignore[arg-type]


# -- correction queued, link confirm, problems ----------------------------------------------------


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("item", cards.REFERRAL_ITEMS)
def test_correction_queued_names_the_item_not_its_value(lang: cards.Language, item: str) -> None:
    card = cards.correction_queued_card(
        lang, reference=CORRECTION, corrected_item=item, recipient=RECIPIENT, queued_at=SENT
    )
    assert cards.text(lang, "correction.queued.text", reference=CORRECTION, recipient=RECIPIENT) in texts(card)
    assert list(facts(card).values()) == [
        CORRECTION,
        RECIPIENT,
        cards.text(lang, f"item.{item}.label"),
        "02/03/2026 14:05",
    ]
    assert inputs(card) == []


def test_correction_queued_in_dutch_and_unknown_item() -> None:
    card = cards.correction_queued_card(
        "nl", reference=CORRECTION, corrected_item="email", recipient=RECIPIENT, queued_at=SENT
    )
    assert "De correctie KG-2026-0057 wordt versleuteld verstuurd naar OCMW Sint-Gillis-Waas." in texts(card)
    with pytest.raises(cards.CardError):
        cards.correction_queued_card(
            "nl", reference=CORRECTION, corrected_item="iban", recipient=RECIPIENT, queued_at=SENT
        )


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_link_confirm(lang: cards.Language) -> None:
    card = cards.link_confirm_card(lang, ocmw=RECIPIENT, code=CODE)
    assert cards.text(lang, "link.confirm.text", ocmw=RECIPIENT) in texts(card)
    assert [a["title"] for a in actions(card)] == [
        cards.text(lang, "action.replace"),
        cards.text(lang, "action.cancel"),
    ]
    nl = cards.link_confirm_card("nl", ocmw=RECIPIENT, code=CODE)
    assert (
        "Dit protocol met OCMW Sint-Gillis-Waas is al gekoppeld aan een ander Teams-gesprek. Wil je dit gesprek in "
        "de plaats gebruiken? Nieuwe doorverwijzingen komen dan hier binnen."
    ) in texts(nl)
    assert [a["title"] for a in actions(nl)] == ["Vervangen", "Annuleren"]


NEW_PROBLEMS = {
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
    "not_listed_for_team": ("team", "ocmw"),
}


def test_new_problems_and_their_params() -> None:
    for problem, params in NEW_PROBLEMS.items():
        assert cards.PROBLEMS[problem] == params
    assert set(NEW_PROBLEMS) | {"draft_sending"} == cards.PROBLEMS_WITHOUT_RESTART


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_a_referral_being_sent_offers_no_start_again(lang: cards.Language) -> None:
    """Starting again there would refer the same family a second time."""
    card = cards.problem_card(lang, "draft_sending", reference=REFERENCE)
    assert actions(card) == []
    assert REFERENCE in card["body"][1]["text"]


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("problem", sorted(NEW_PROBLEMS))
def test_new_problems_have_no_start_again_button(lang: cards.Language, problem: str) -> None:
    params = dict.fromkeys(NEW_PROBLEMS[problem], REFERENCE)
    card = cards.problem_card(lang, problem, **params)
    assert actions(card) == []
    assert card["body"][0]["text"] == cards.text(lang, f"problem.{problem}.title", **params)
    assert card["body"][1]["text"] == cards.text(lang, f"problem.{problem}.text", **params)
    if params:
        assert REFERENCE in serialized(card)


# -- chat texts ----------------------------------------------------------------------------------

CHAT_TEXTS = {
    "link_done": {"ocmw"},
    "link_invalid": set(),
    "link_already_here": {"ocmw"},
    "link_already_here_cards_again": {"ocmw", "count"},
    "link_cancelled": set(),
    "link_not_in_channel": set(),
    "link_tenant_not_allowed": set(),
    "link_rate_limited": {"minutes"},
    "ack_to_referrer": {"reference", "recipient", "name", "time"},
    "outcome_to_referrer_contact_help_wanted": {"reference", "recipient"},
    "outcome_to_referrer_contact_no_help_wanted": {"reference", "recipient"},
    "outcome_to_referrer_unreachable": {"reference", "recipient"},
    "deleted_to_referrer": {"reference", "recipient"},
    "reminder_ack_ocmw": {"reference", "days"},
    "reminder_ack_referrer": {"reference", "recipient", "days"},
    "reminder_outcome_ocmw": {"reference", "days"},
    "reminder_outcome_referrer": {"reference", "recipient", "days"},
    "reminder_deletion_ocmw": {"reference", "days"},
    "reminder_deletion_referrer": {"reference", "recipient", "days"},
    "not_linked_yet": set(),
    "linked_status_hint": set(),
}


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("key", sorted(CHAT_TEXTS))
def test_chat_texts_take_exactly_their_parameters(lang: cards.Language, key: str) -> None:
    assert text_params(catalogue(lang)[key]) == CHAT_TEXTS[key]
    message = cards.text(lang, key, **{param: f"<{param}>" for param in CHAT_TEXTS[key]})
    assert "{" not in message


def test_every_outcome_has_a_message_to_the_referrer() -> None:
    for outcome in cards.OUTCOMES:
        assert f"outcome_to_referrer_{outcome}" in CHAT_TEXTS


def test_chat_texts_in_dutch() -> None:
    assert cards.text("nl", "link_done", ocmw=RECIPIENT) == (
        "Gekoppeld: nieuwe doorverwijzingen van Kind en Gezin voor OCMW Sint-Gillis-Waas komen voortaan in dit "
        "gesprek binnen."
    )
    assert cards.text(
        "nl", "ack_to_referrer", reference=REFERENCE, recipient=RECIPIENT, name=ACKER, time="03/03/2026 09:12"
    ) == (
        "OCMW Sint-Gillis-Waas heeft de ontvangst van doorverwijzing KG-2026-0042 bevestigd "
        "(Els Peeters, 03/03/2026 09:12)."
    )
    assert cards.text("nl", "reminder_ack_ocmw", reference=REFERENCE, days="3") == (
        "Doorverwijzing KG-2026-0042 is al 3 werkdagen niet bevestigd. Open de bijlage met 7-Zip en bevestig de "
        "ontvangst hieronder."
    )
    reminder = cards.text("nl", "reminder_ack_referrer", reference=REFERENCE, recipient=RECIPIENT, days="5")
    assert "5 werkdagen" in reminder and "Bel" in reminder and REFERENCE in reminder
    assert "beheerder" in cards.text("nl", "link_invalid")
    assert "koppel" in cards.text("nl", "not_linked_yet")


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_a_teams_message_given_up_on_shows_in_the_status_row(lang: cards.Language) -> None:
    card = cards.referral_status_card(lang, audience="referrer", rows=[row("sent", teams_message_lost=True),
                                                                        row("sent", n=2)])
    lost = cards.text(lang, "status.teams_message_lost")
    first, second = status_rows(card)
    assert lost in json.dumps(first, ensure_ascii=False) and lost not in json.dumps(second, ensure_ascii=False)


@pytest.mark.parametrize(("lang", "notice", "card_text"), [
    ("nl", "dan komt er een bericht om het foute te verwijderen", "of laat weten dat er geen juist telefoonnummer of "
     "e-mailadres is"),
    ("en", "a message asks you to delete the wrong one", "or lets you know there is no correct phone number or email "
     "address"),
])
def test_the_ocmw_is_not_promised_only_a_correction_card(lang: cards.Language, notice: str, card_text: str) -> None:
    """A reported phone number or e-mail address may be answered "Er is geen juist ...": then a message asks the
    OCMW to delete the wrong one, and no correction card comes. The card and the notice said only that it would."""
    assert notice in cards.text(lang, "notice.quality_reported")
    assert card_text in cards.text(lang, "ocmw.quality.text")
