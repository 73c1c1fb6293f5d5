"""The card functions: structure, actions, inputs, errors next to their input, escaping, privacy."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest

import cards
from bot.core.referral_values import ClientDetails, FieldError
from tests.support.card_reading import all_actions as actions
from tests.support.card_reading import assert_complete_card, read_aloud, walk
from tests.support.family_information import NUDGES, missing_points

DRAFT_ID = "draft-7f3a"
FINGERPRINT = "q3Vb0Lk2xY8fT1mA"  # as `DraftStore.details_fingerprint` makes it: 16 URL-safe characters
RECIPIENT = "OCMW Sint-Gillis-Waas"
MAILBOX = "welzijnshuis@sint-gillis-waas.be"
MUNICIPALITY = "Sint-Gillis-Waas"
#: The parameters of the postal-code and municipality errors, as `bot.referral.details_validation` fills them.
AREA = (("municipality", MUNICIPALITY), ("ocmw", RECIPIENT), ("places", "Sint-Gillis-Waas, De Klinge"),
        ("accepted", "9170 (Sint-Gillis-Waas, De Klinge)"))
REFERENCE = "KG-2026-0042"
SHEET_URL = "https://vd.example.be/informatieblad/OR-KG-NOW-OCMW-SGW-2026"


def facts(protocol_id: str, recipient: str, dpo: str, sheet_url: str = "") -> cards.ProtocolFacts:
    """A protocol as the consent card gets it (`bot.referral.information_sheet.protocol_facts` makes it)."""
    return cards.ProtocolFacts(
        id=protocol_id, title=f"Protocol Opgroeien regie - {recipient}", sender="Opgroeien regie",
        sender_team="Kind en Gezin team Noord-Oost Waasland", sender_dpo="dpo@opgroeien.be", recipient=recipient,
        recipient_dpo=dpo, in_force_from=dt.date(2026, 3, 1), sheet_url=sheet_url,
    )


PROTOCOLS = [facts("OR-KG-NOW-OCMW-SGW-2026", RECIPIENT, "informatica@sint-gillis-waas.be", SHEET_URL)]
TWO_PROTOCOLS = [facts("P-SGW", RECIPIENT, "informatica@sint-gillis-waas.be"),
                 facts("P-BEV", "OCMW Beveren", "privacy@beveren.be")]
WHEN = dt.datetime(2026, 3, 2, 14, 5, tzinfo=dt.timezone(dt.timedelta(hours=1)))
CLIENT = ClientDetails(
    first_name="**Jan**",
    last_name="[x](http://evil)",
    street="Zwaluwenstraat",
    house_number="77 bus 5",
    postal_code="9170",
    municipality="De Klinge",
    phone="+32470123456",
    email="jan.vermeulen@example.org",
)
LIMIT_BYTES = 40 * 1024
ALL_FIELD_ERRORS = {field: FieldError("required") for field in cards.DETAIL_FIELDS}

CardFactory = Callable[[cards.Language], dict[str, Any]]

# name -> (factory, verbs it must offer)
CARDS: dict[str, tuple[CardFactory, set[str]]] = {
    "welcome": (cards.welcome_card, {cards.VERB_START}),
    "welcome_shared": (cards.shared_welcome_card, set()),
    "personal_chat_no_link": (lambda lang: cards.personal_chat_card(lang, chat_url=""), set()),
    "consent": (
        lambda lang: cards.consent_card(
            lang, draft_id=DRAFT_ID, protocols=PROTOCOLS, selected=None, ticked={}, missing=cards.CONSENT_INPUTS
        ),
        {cards.VERB_CONSENT, cards.VERB_CANCEL},
    ),
    "consent_two": (
        lambda lang: cards.consent_card(
            lang, draft_id=DRAFT_ID, protocols=TWO_PROTOCOLS, selected=None, ticked={}, missing=()
        ),
        {cards.VERB_CONSENT, cards.VERB_CANCEL},
    ),
    "details": (
        lambda lang: cards.details_card(
            lang,
            draft_id=DRAFT_ID,
            recipient=RECIPIENT,
            municipality=MUNICIPALITY,
            values={},
            errors={},
        ),
        {cards.VERB_DETAILS, cards.VERB_CANCEL},
    ),
    "details_errors": (
        lambda lang: cards.details_card(
            lang,
            draft_id=DRAFT_ID,
            recipient=RECIPIENT,
            municipality=MUNICIPALITY,
            values={f: "x" * cards.FIELD_MAX_LENGTHS[f] for f in cards.DETAIL_FIELDS},
            errors=ALL_FIELD_ERRORS,
        ),
        {cards.VERB_DETAILS, cards.VERB_CANCEL},
    ),
    "review": (
        lambda lang: cards.review_card(lang, draft_id=DRAFT_ID, recipient=RECIPIENT, mailbox=MAILBOX, client=CLIENT,
                                       details_fingerprint=FINGERPRINT),
        {cards.VERB_SEND, cards.VERB_EDIT, cards.VERB_CANCEL},
    ),
    "sent": (
        lambda lang: cards.sent_card(lang, reference=REFERENCE, recipient=RECIPIENT, mailbox=MAILBOX, sent_at=WHEN),
        {cards.VERB_START, "consent.withdraw", cards.VERB_CORRECTION_START},
    ),
    "queued": (
        lambda lang: cards.queued_card(lang, reference=REFERENCE, recipient=RECIPIENT, mailbox=MAILBOX, queued_at=WHEN),
        {cards.VERB_START},
    ),
    "cancelled": (cards.cancelled_card, {cards.VERB_START}),
    "cancelled_reference": (lambda lang: cards.cancelled_card(lang, reference=REFERENCE), {cards.VERB_START}),
    "send_failed_retry": (
        lambda lang: cards.problem_card(lang, "send_failed", reference=REFERENCE, minutes="45", draft_id=DRAFT_ID,
                                        details_fingerprint=FINGERPRINT),
        {cards.VERB_START, cards.VERB_SEND},
    ),
    "password_unavailable_retry": (
        lambda lang: cards.problem_card(lang, "password_unavailable", reference=REFERENCE, minutes="45",
                                        draft_id=DRAFT_ID, details_fingerprint=FINGERPRINT),
        {cards.VERB_START, cards.VERB_SEND},
    ),
}
PROBLEM_PARAMS = {"reference": REFERENCE, "ocmw": RECIPIENT, "recipient": RECIPIENT,
                  "team": "Kind en Gezin team Beveren", "minutes": "45",
                  "dpo": "informatica@sint-gillis-waas.be", "item": "telefoonnummer", "later": f"{REFERENCE}-3"}


def _problem_factory(problem: str) -> CardFactory:
    def factory(lang: cards.Language) -> dict[str, Any]:
        return cards.problem_card(lang, problem, **{p: PROBLEM_PARAMS[p] for p in cards.PROBLEMS[problem]})

    return factory


CARDS.update(
    {
        f"problem_{problem}": (
            _problem_factory(problem),
            set() if problem in cards.PROBLEMS_WITHOUT_RESTART else {cards.VERB_START},
        )
        for problem in cards.PROBLEMS
    }
)
NO_CLIENT_DATA = [name for name in CARDS if name.split("_")[0] in {"sent", "queued", "cancelled", "problem"}]




def serialized(card: dict[str, Any]) -> str:
    return json.dumps(card, ensure_ascii=False)


def body_index(card: dict[str, Any], input_id: str) -> int:
    return next(i for i, element in enumerate(card["body"]) if element.get("id") == input_id)


def element_after(card: dict[str, Any], input_id: str) -> dict[str, Any]:
    """The body element right after the input `input_id`, or {} when it is the last one."""
    body: list[dict[str, Any]] = card["body"]
    index = body_index(card, input_id) + 1
    return body[index] if index < len(body) else {}


def red_blocks(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in card["body"] if e.get("type") == "TextBlock" and e.get("color") == "attention"]


# -- every card --------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("name", sorted(CARDS))
def test_card_is_a_complete_adaptive_card_1_5(lang: cards.Language, name: str) -> None:
    card = CARDS[name][0](lang)
    assert isinstance(card, dict)
    assert_complete_card(card)


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("name", sorted(CARDS))
def test_only_action_execute_with_documented_verbs_and_data(lang: cards.Language, name: str) -> None:
    factory, verbs = CARDS[name]
    found = actions(factory(lang))
    links = [action for action in found if action["type"] == "Action.OpenUrl"]
    assert [link["url"] for link in links] == ([SHEET_URL] if name == "consent" else []), "only the family's sheet"
    found = [action for action in found if action not in links]
    assert {action["verb"] for action in found} == verbs
    for action in found:
        assert action["type"] == "Action.Execute"
        assert action["title"]
        if action["verb"] == cards.VERB_START:
            assert action["data"] == {}
        elif action["verb"] in {"consent.withdraw", cards.VERB_CORRECTION_START}:
            assert action["data"] == {"reference": REFERENCE}
        elif action["verb"] == cards.VERB_CONSENT:
            assert action["data"] == {"draftId": DRAFT_ID, "textVersion": cards.consent_text_version()}
        elif action["verb"] == cards.VERB_SEND:  # review and retry: only the data the card showed
            assert action["data"] == {"draftId": DRAFT_ID, "detailsFingerprint": FINGERPRINT}
        else:
            assert action["data"] == {"draftId": DRAFT_ID}
        if action["verb"] in {cards.VERB_CANCEL, cards.VERB_SEND, cards.VERB_EDIT}:
            assert action["associatedInputs"] == "none"


def test_all_verbs_are_the_dialogue_verbs() -> None:
    assert {
        "referral.start", "referral.consent", "referral.details", "referral.edit", "referral.send", "referral.cancel",
    } == cards.VERBS  # fmt: skip


@pytest.mark.parametrize("name", sorted(CARDS))
def test_dutch_and_english_cards_differ_only_in_text(name: str) -> None:
    def shape(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: shape(v) for k, v in node.items() if k not in {"text", "title", "label", "placeholder"}}
        if isinstance(node, list):
            return [shape(item) for item in node]
        return node

    factory = CARDS[name][0]
    assert shape(factory("nl")) == shape(factory("en"))
    assert factory("nl") != factory("en")


# -- welcome -----------------------------------------------------------------------------------


def test_welcome_mentions_the_commands() -> None:
    assert "**nieuw**" in serialized(cards.welcome_card("nl"))
    assert "**hulp**" in serialized(cards.welcome_card("nl"))
    assert "**new**" in serialized(cards.welcome_card("en"))
    assert "**help**" in serialized(cards.welcome_card("en"))


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_the_shared_welcome_explains_the_channel_and_offers_no_referral(lang: cards.Language) -> None:
    card = cards.shared_welcome_card(lang)
    assert actions(card) == []
    assert "**koppel**" in serialized(card) and "**status**" in serialized(card)
    assert cards.text(lang, "welcome_shared.referrers") in serialized(card)


# -- the referral only in the personal chat --------------------------------------------------------

CHAT_URL = "https://teams.microsoft.com/l/chat/0/0?users=28:0b8a3c4e-1d2f-4a5b-9c6d-7e8f9a0b1c2d"


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_the_personal_chat_card_opens_the_bots_chat(lang: cards.Language) -> None:
    card = cards.personal_chat_card(lang, chat_url=CHAT_URL)
    assert_complete_card(card)
    [button] = actions(card)
    assert button == {
        "type": "Action.OpenUrl", "title": cards.text(lang, "action.open_personal_chat"), "url": CHAT_URL,
        "style": "positive",
    }  # fmt: skip
    assert cards.text(lang, "personal_chat.how") in serialized(card)


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_without_a_link_the_personal_chat_card_only_says_how_to_get_there(lang: cards.Language) -> None:
    card = cards.personal_chat_card(lang, chat_url="")
    assert actions(card) == []
    assert cards.text(lang, "personal_chat.how") in serialized(card)
    assert "url" not in serialized(card)


@pytest.mark.parametrize("url", ["http://teams.microsoft.com/l/chat/0/0", "https://evil.example/l/", "javascript:x"])
def test_the_personal_chat_card_links_only_to_teams(url: str) -> None:
    with pytest.raises(cards.CardError, match="chat_url"):
        cards.personal_chat_card("nl", chat_url=url)


# -- consent -----------------------------------------------------------------------------------


def consent(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "draft_id": DRAFT_ID,
        "protocols": PROTOCOLS,
        "selected": None,
        "ticked": {},
        "missing": (),
    }
    arguments.update(overrides)
    lang = arguments.pop("lang", "nl")
    return cards.consent_card(lang, **arguments)


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_consent_inputs_are_the_choice_and_five_toggles(lang: cards.Language) -> None:
    card = consent(lang=lang)
    inputs = [e for e in card["body"] if e["type"].startswith("Input.")]
    assert [e["id"] for e in inputs] == list(cards.CONSENT_INPUTS)
    choice = inputs[0]
    assert choice["type"] == "Input.ChoiceSet"
    assert choice["style"] == "compact"
    for toggle in inputs[1:]:
        assert toggle["type"] == "Input.Toggle"
        assert (toggle["valueOn"], toggle["valueOff"], toggle["value"]) == ("true", "false", "false")
        explanation = card["body"][body_index(card, toggle["id"]) - 1]
        assert explanation["type"] == "TextBlock" and len(explanation["text"]) > 40


def test_consent_without_missing_has_no_red_text() -> None:
    assert red_blocks(consent()) == []


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize(
    "missing",
    [
        ("ocmw",),
        ("consentGiven",),
        ("informedRecipient", "informedFollowUp"),
        cards.CONSENT_INPUTS,
    ],
)
def test_consent_marks_exactly_the_missing_inputs(lang: cards.Language, missing: tuple[str, ...]) -> None:
    card = consent(lang=lang, protocols=TWO_PROTOCOLS, missing=missing)
    body = card["body"]
    for input_id in cards.CONSENT_INPUTS:
        after = element_after(card, input_id)
        is_red = after.get("type") == "TextBlock" and after.get("color") == "attention"
        assert is_red == (input_id in missing), input_id
        if is_red:
            assert after["text"] == cards.text(lang, f"consent.missing.{input_id}")
    summary = body[1]
    assert summary["color"] == "attention" and summary["text"] == cards.text(lang, "consent.missing.summary")
    assert len(red_blocks(card)) == len(missing) + 1


def test_consent_keeps_ticked_values() -> None:
    ticked = {"informedData": True, "informedPurpose": True, "consentGiven": False, "unrelated": True}
    card = consent(ticked=ticked, missing=("informedRecipient", "informedFollowUp", "consentGiven"))
    values = {e["id"]: e["value"] for e in card["body"] if e["type"] == "Input.Toggle"}
    assert values == {
        "informedData": "true",
        "informedRecipient": "false",
        "informedPurpose": "true",
        "informedFollowUp": "false",
        "consentGiven": "false",
    }


def test_consent_single_protocol_is_preselected_and_named() -> None:
    card = consent()
    choice = card["body"][body_index(card, "ocmw")]
    assert choice["choices"] == [{"title": RECIPIENT, "value": PROTOCOLS[0].id}]
    assert choice["value"] == PROTOCOLS[0].id
    recipient_text = card["body"][body_index(card, "informedRecipient") - 2]["text"]
    assert RECIPIENT in recipient_text


def test_consent_several_protocols_let_the_user_choose() -> None:
    card = consent(protocols=TWO_PROTOCOLS)
    choice = card["body"][body_index(card, "ocmw")]
    assert [c["value"] for c in choice["choices"]] == ["P-SGW", "P-BEV"]
    assert choice["value"] == ""
    recipient_text = card["body"][body_index(card, "informedRecipient") - 2]["text"]
    assert recipient_text == cards.text("nl", "consent.recipient.text_choose")
    assert "hierboven" in recipient_text


def test_consent_keeps_the_selected_protocol() -> None:
    card = consent(protocols=TWO_PROTOCOLS, selected="P-BEV")
    assert card["body"][body_index(card, "ocmw")]["value"] == "P-BEV"
    card = consent(protocols=TWO_PROTOCOLS, selected="P-GONE")
    assert card["body"][body_index(card, "ocmw")]["value"] == ""


@pytest.mark.parametrize("protocols", [PROTOCOLS, TWO_PROTOCOLS], ids=["one", "two"])
def test_consent_tells_every_point_without_a_nudge(protocols: list[cards.ProtocolFacts]) -> None:
    told = read_aloud(consent(protocols=protocols))
    assert missing_points(told) == {}
    assert NUDGES.search(told) is None
    for protocol in protocols:
        assert f"DPO {protocol.recipient}: {protocol.recipient_dpo}" in told
    assert "DPO Opgroeien regie: dpo@opgroeien.be" in told


def sheet_buttons(card: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["title"], a["url"]) for a in actions(card) if a["type"] == "Action.OpenUrl"]


def dpo_facts(card: dict[str, Any]) -> list[tuple[str, str]]:
    [fact_set] = [e for e in card["body"] if e["type"] == "FactSet"]
    return [(fact["title"], fact["value"]) for fact in fact_set["facts"]]


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_consent_names_both_dpos_and_links_the_sheet(lang: cards.Language) -> None:
    card = consent(lang=lang)
    assert dpo_facts(card) == [("DPO Opgroeien regie", "dpo@opgroeien.be"),
                               (f"DPO {RECIPIENT}", "informatica@sint-gillis-waas.be")]
    assert sheet_buttons(card) == [(cards.text(lang, "consent.sheet.button"), SHEET_URL)]
    assert cards.text(lang, "consent.sheet.text") in serialized(card)
    assert card["body"][-1]["text"] == cards.text(lang, "consent.version_label", version=cards.consent_text_version())


def test_consent_with_several_protocols_names_every_ocmws_dpo_and_sheet() -> None:
    with_sheets = [dataclasses.replace(p, sheet_url=f"https://vd.example.be/informatieblad/{p.id}")
                   for p in TWO_PROTOCOLS]
    card = consent(protocols=with_sheets)
    assert dpo_facts(card) == [("DPO Opgroeien regie", "dpo@opgroeien.be"),
                               (f"DPO {RECIPIENT}", "informatica@sint-gillis-waas.be"),
                               ("DPO OCMW Beveren", "privacy@beveren.be")], "Opgroeien regie's DPO once"
    assert sheet_buttons(card) == [
        (f"Informatieblad {RECIPIENT}", "https://vd.example.be/informatieblad/P-SGW"),
        ("Informatieblad OCMW Beveren", "https://vd.example.be/informatieblad/P-BEV"),
    ]


def test_consent_without_a_sheet_address_has_no_link_and_no_sheet_text() -> None:
    card = consent(protocols=TWO_PROTOCOLS)
    assert sheet_buttons(card) == [] and cards.text("nl", "consent.sheet.text") not in serialized(card)


@pytest.mark.parametrize("url", ["javascript:alert(1)", "ftp://vd.example.be/x", "//vd.example.be/x"])
def test_consent_refuses_a_sheet_address_that_is_not_a_web_page(url: str) -> None:
    with pytest.raises(cards.CardError, match="sheet_url"):
        consent(protocols=[dataclasses.replace(PROTOCOLS[0], sheet_url=url)])


def test_consent_after_a_text_change_says_to_read_again() -> None:
    card = consent(changed=True, ticked={toggle: True for toggle in cards.CONSENT_TOGGLES})
    assert [block["text"] for block in red_blocks(card)] == [cards.text("nl", "consent.changed")]


def test_consent_refuses_unknown_missing_ids_and_no_protocols() -> None:
    with pytest.raises(cards.CardError):
        consent(missing=("informedDta",))
    with pytest.raises(cards.CardError):
        consent(protocols=[])


# -- details -----------------------------------------------------------------------------------


def details(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "draft_id": DRAFT_ID,
        "recipient": RECIPIENT,
        "municipality": MUNICIPALITY,
        "values": {},
        "errors": {},
    }
    arguments.update(overrides)
    lang = arguments.pop("lang", "nl")
    return cards.details_card(lang, **arguments)


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_details_inputs_are_exactly_the_eight_fields(lang: cards.Language) -> None:
    card = details(lang=lang)
    inputs = [node for node in walk(card) if str(node.get("type", "")).startswith("Input.")]
    assert [e["id"] for e in inputs] == list(cards.DETAIL_FIELDS)
    assert list(cards.DETAIL_FIELDS) == [
        "firstName", "lastName", "street", "houseNumber", "postalCode", "municipality", "phone", "email",
    ]  # fmt: skip
    for element in inputs:
        assert element["type"] == "Input.Text"
        assert element["label"] and element["placeholder"]
        assert element["maxLength"] == cards.FIELD_MAX_LENGTHS[element["id"]]
        assert element["value"] == ""
    by_id = {e["id"]: e for e in inputs}
    assert by_id["phone"]["style"] == "tel"
    assert by_id["phone"]["placeholder"] == "0470 12 34 56"
    assert by_id["email"]["style"] == "email"
    assert "12 bus 3" in by_id["houseNumber"]["label"]


def test_details_max_lengths() -> None:
    assert dict(cards.FIELD_MAX_LENGTHS) == {
        "firstName": 100, "lastName": 100, "street": 150, "houseNumber": 20,
        "postalCode": 4, "municipality": 100, "phone": 30, "email": 254,
    }  # fmt: skip


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_details_note_names_the_area_and_the_limits(lang: cards.Language) -> None:
    card = details(lang=lang, municipality="Beveren", recipient="OCMW Beveren")
    texts = [e["text"] for e in card["body"] if e["type"] == "TextBlock"]
    assert cards.text(lang, "details.only_these") in texts
    assert cards.text(lang, "details.contact_needed") in texts
    assert any("Beveren" in t and "OCMW Beveren" in t for t in texts)
    assert red_blocks(card) == []


def test_details_keeps_what_was_typed() -> None:
    typed = {
        "firstName": "**Jan**",
        "lastName": "${lastName}",
        "street": "Zwaluwenstraat",
        "houseNumber": "77 bus 5",
        "postalCode": "91",
        "municipality": "De Klinge",
        "phone": "0470 12",
        "email": "jan@",
        "draftId": "ignored",
    }
    card = details(values=typed, errors={"postalCode": FieldError("postal_code_format")})
    values = {e["id"]: e["value"] for e in card["body"] if e["type"] == "Input.Text"}
    assert values == {k: v for k, v in typed.items() if k != "draftId"}


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_details_error_text_comes_right_after_its_input(lang: cards.Language) -> None:
    errors = {
        "houseNumber": FieldError("house_number_format"),
        "postalCode": FieldError("postal_code_outside_area", AREA),
        "phone": FieldError("phone_too_short"),
        "email": FieldError("too_long", (("max", "254"),)),
    }
    card = details(lang=lang, errors=errors)
    body = card["body"]
    for field in cards.DETAIL_FIELDS:
        after = element_after(card, field)
        if field in errors:
            assert after["type"] == "TextBlock" and after["color"] == "attention"
            assert after["text"] == cards.field_error_text(lang, field, errors[field])
        else:
            assert after.get("color") != "attention", field
    assert len(red_blocks(card)) == len(errors) + 1
    summary = body[1]
    assert summary["color"] == "attention"
    for field in errors:
        assert cards.text(lang, f"field.{field}.name") in summary["text"]


def test_details_error_messages_read_well() -> None:
    outside = cards.field_error_text("nl", "postalCode", FieldError("postal_code_outside_area", AREA))
    assert outside.startswith(
        "Deze postcode hoort niet bij OCMW Sint-Gillis-Waas. Dat OCMW helpt alleen gezinnen met postcode "
        "9170 (Sint-Gillis-Waas, De Klinge)."
    )
    assert "verwijs dan door naar het OCMW van die gemeente" in outside
    elsewhere = cards.field_error_text("en", "municipality", FieldError("municipality_mismatch", AREA))
    assert "Enter one of these: Sint-Gillis-Waas, De Klinge." in elsewhere
    assert cards.field_error_text("nl", "phone", FieldError("phone_too_short")) == (
        "Dit telefoonnummer is onvolledig: geef een Belgisch nummer zoals 0470 12 34 56 "
        "of een internationaal nummer met +."
    )
    assert cards.field_error_text("nl", "houseNumber", FieldError("required")) == "Vul het huisnummer in."
    assert cards.field_error_text("en", "email", FieldError("too_long", (("max", "254"),))) == (
        "This is too long for the email address: use at most 254 characters."
    )


def test_details_contact_missing_under_phone_and_email() -> None:
    error = FieldError("contact_missing")
    card = details(errors={"phone": error, "email": error})
    for field in ("phone", "email"):
        assert card["body"][body_index(card, field) + 1]["text"] == cards.field_error_text("nl", field, error)


def test_details_refuses_unknown_fields_and_codes() -> None:
    with pytest.raises(cards.CardError):
        details(errors={"notes": FieldError("required")})
    with pytest.raises(cards.CardError):
        details(errors={"phone": FieldError("phone_weird")})
    with pytest.raises(cards.CardError, match="max"):
        details(errors={"phone": FieldError("too_long")})


# -- review ------------------------------------------------------------------------------------


def facts(card: dict[str, Any]) -> dict[str, str]:
    factset = next(e for e in card["body"] if e["type"] == "FactSet")
    return {fact["title"]: fact["value"] for fact in factset["facts"]}


def test_review_escapes_typed_values() -> None:
    card = cards.review_card("nl", draft_id=DRAFT_ID, recipient=RECIPIENT, mailbox=MAILBOX, client=CLIENT,
                             details_fingerprint=FINGERPRINT)
    shown = facts(card)
    assert shown["Voornaam"] == r"\*\*Jan\*\*"
    assert shown["Familienaam"] == r"\[x\]\(http://evil\)"
    assert shown["Adres"] == r"Zwaluwenstraat 77 bus 5, 9170 De Klinge"
    assert shown["Telefoonnummer"] == r"\+32 470 12 34 56"
    assert shown["E-mailadres"] == r"jan\.vermeulen@example\.org"
    text = serialized(card)
    assert "**Jan**" not in text
    assert "[x](http://evil)" not in text


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_review_says_where_it_goes(lang: cards.Language) -> None:
    card = cards.review_card(lang, draft_id=DRAFT_ID, recipient=RECIPIENT, mailbox=MAILBOX, client=CLIENT,
                             details_fingerprint=FINGERPRINT)
    destination = cards.text(lang, "review.destination", mailbox=MAILBOX, recipient=RECIPIENT)
    assert destination in [e.get("text") for e in card["body"]]
    assert MAILBOX in destination and RECIPIENT in destination


def test_review_send_carries_the_fingerprint_of_the_data_shown_and_nothing_else() -> None:
    card = cards.review_card("nl", draft_id=DRAFT_ID, recipient=RECIPIENT, mailbox=MAILBOX, client=CLIENT,
                             details_fingerprint=FINGERPRINT)
    data = {action["verb"]: action["data"] for action in actions(card)}
    assert data[cards.VERB_SEND] == {"draftId": DRAFT_ID, "detailsFingerprint": FINGERPRINT}
    assert data[cards.VERB_EDIT] == data[cards.VERB_CANCEL] == {"draftId": DRAFT_ID}
    with pytest.raises(cards.CardError):
        cards.review_card("nl", draft_id=DRAFT_ID, recipient=RECIPIENT, mailbox=MAILBOX, client=CLIENT,
                          details_fingerprint="")


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_review_of_data_changed_elsewhere_says_nothing_was_sent(lang: cards.Language) -> None:
    plain = cards.review_card(lang, draft_id=DRAFT_ID, recipient=RECIPIENT, mailbox=MAILBOX, client=CLIENT,
                              details_fingerprint=FINGERPRINT)
    changed = cards.review_card(lang, draft_id=DRAFT_ID, recipient=RECIPIENT, mailbox=MAILBOX, client=CLIENT,
                                details_fingerprint=FINGERPRINT, changed=True)
    notice = cards.text(lang, "review.changed")
    assert notice not in serialized(plain)
    assert next(e for e in changed["body"] if e.get("text") == notice)["color"] == "attention"
    assert ("niets verstuurd" if lang == "nl" else "Nothing was sent") in notice


def test_review_shows_a_dash_for_missing_phone_or_email() -> None:
    client = ClientDetails("An", "Peeters", "Dorp", "1", "9170", "Meerdonk", None, None)
    shown = facts(cards.review_card("en", draft_id=DRAFT_ID, recipient=RECIPIENT, mailbox=MAILBOX, client=client,
                                           details_fingerprint=FINGERPRINT))
    assert shown["Phone number"] == "—"
    assert shown["Email address"] == "—"


# -- sent, queued, cancelled, problems -----------------------------------------------------------


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("name", NO_CLIENT_DATA)
def test_outcome_and_problem_cards_contain_no_client_data(lang: cards.Language, name: str) -> None:
    review = CARDS["review"][0](lang)
    # Every value as typed, as shown on the review card, and distinctive parts of them.
    shown = [*CLIENT.values(), *facts(review).values(), "Zwaluwen", "Klinge", "470 12 34 56", "vermeulen"]
    text = serialized(CARDS[name][0](lang))
    for value in shown:
        assert value not in text, (name, value)
        assert json.dumps(value, ensure_ascii=False)[1:-1] not in text, (name, value)


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_sent_card(lang: cards.Language) -> None:
    card = cards.sent_card(lang, reference=REFERENCE, recipient=RECIPIENT, mailbox=MAILBOX, sent_at=WHEN)
    assert list(facts(card).values()) == [REFERENCE, RECIPIENT, MAILBOX, "02/03/2026 14:05"]
    assert card["body"][0]["text"] == cards.text(lang, "sent.title")
    assert "Teams" in serialized(card)


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_queued_card(lang: cards.Language) -> None:
    card = cards.queued_card(lang, reference=REFERENCE, recipient=RECIPIENT, mailbox=MAILBOX, queued_at=WHEN)
    assert list(facts(card).values()) == [REFERENCE, RECIPIENT, MAILBOX, "02/03/2026 14:05"]
    assert card["body"][0]["text"] == cards.text(lang, "queued.title")
    assert cards.text(lang, "queued.next") in serialized(card)


@pytest.mark.parametrize("at", [WHEN.replace(tzinfo=None), WHEN.astimezone(dt.UTC)], ids=["naive", "utc"])
def test_a_card_refuses_a_time_not_converted_to_local(at: dt.datetime) -> None:
    """Every card shows local time: a stored (UTC) or naive time passed unconverted is a caller's bug, not 1 h off."""
    with pytest.raises(cards.CardError, match="local time"):
        cards.queued_card("nl", reference=REFERENCE, recipient=RECIPIENT, mailbox=MAILBOX, queued_at=at)
    with pytest.raises(cards.CardError, match="local time"):
        cards.correction_queued_card("nl", reference=REFERENCE, corrected_item="phone", recipient=RECIPIENT,
                                     queued_at=at)


def test_cancelled_card_shows_the_reference_only_when_given() -> None:
    assert REFERENCE in serialized(cards.cancelled_card("nl", reference=REFERENCE))
    assert all(e["type"] != "FactSet" for e in cards.cancelled_card("nl")["body"])
    assert "niets verstuurd" in serialized(cards.cancelled_card("nl"))


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("problem", sorted(cards.PROBLEMS))
def test_problem_card_has_title_and_reason(lang: cards.Language, problem: str) -> None:
    params = {p: PROBLEM_PARAMS[p] for p in cards.PROBLEMS[problem]}
    card = cards.problem_card(lang, problem, **params)
    title, reason = card["body"][0], card["body"][1]
    assert title["text"] == cards.text(lang, f"problem.{problem}.title", **params)
    assert title["color"] == "attention"
    assert reason["text"] == cards.text(lang, f"problem.{problem}.text", **params)
    for value in params.values():
        assert value in serialized(card)
    restart = [] if problem in cards.PROBLEMS_WITHOUT_RESTART else [cards.text(lang, "action.start_again")]
    assert [a["title"] for a in actions(card)] == restart


def test_problem_card_refuses_unknown_problems_and_missing_params() -> None:
    with pytest.raises(cards.CardError):
        cards.problem_card("nl", "draft_lost")
    with pytest.raises(cards.CardError, match="reference"):
        cards.problem_card("nl", "send_failed")
    with pytest.raises(cards.CardError):
        cards.problem_card("nl", "draft_unknown", draft_id=DRAFT_ID, details_fingerprint=FINGERPRINT)
    with pytest.raises(cards.CardError, match="details_fingerprint"):  # a retry sends only the data shown
        cards.problem_card("nl", "send_failed", reference=REFERENCE, minutes="45", draft_id=DRAFT_ID)


def test_send_failed_says_not_sent_and_can_offer_a_retry() -> None:
    card = cards.problem_card("nl", "send_failed", reference=REFERENCE, minutes="45", draft_id=DRAFT_ID,
                              details_fingerprint=FINGERPRINT)
    assert "NIET verstuurd" in card["body"][1]["text"]
    assert "45 minuten zonder wijziging" in card["body"][1]["text"]
    assert actions(card)[0]["verb"] == cards.VERB_SEND
    without = cards.problem_card("nl", "send_failed", reference=REFERENCE, minutes="45")
    assert [a["verb"] for a in actions(without)] == [cards.VERB_START]


@pytest.mark.parametrize(("lang", "try_again"), [("nl", "probeer zo opnieuw"), ("en", "try again in a moment")])
def test_password_unavailable_says_why_and_to_try_again_in_a_moment(lang: cards.Language, try_again: str) -> None:
    card = cards.problem_card(lang, "password_unavailable", reference=REFERENCE, minutes="45", draft_id=DRAFT_ID,
                              details_fingerprint=FINGERPRINT)
    title, reason = card["body"][0]["text"], card["body"][1]["text"]
    assert try_again in title.lower() and try_again in reason.lower()
    assert ("wachtwoord" if lang == "nl" else "password") in reason
    assert ("NIET verstuurd" if lang == "nl" else "NOT sent") in reason and REFERENCE in reason
    assert actions(card)[0]["verb"] == cards.VERB_SEND
    assert actions(card)[0]["data"] == {"draftId": DRAFT_ID, "detailsFingerprint": FINGERPRINT}


@pytest.mark.parametrize("item", sorted(cards.ITEM_FIELDS))
def test_submit_actions_carry_the_inputs_of_their_own_card(item: cards.ReferralItem) -> None:
    """The correction card hands its inputs to "Send correction" exactly as the data card does to
    "Continue": card-level Action.Execute with the default `associatedInputs` ("auto"), every input in
    the same card (no ShowCard, no isRequired), ids = the field ids; the other button takes none.
    (The Playground's first-submit trouble is its renderer, see tests/playground/test_playground_correction.py.)
    """
    for card, submit, other, fields in (
        (details(), cards.VERB_DETAILS, cards.VERB_CANCEL, cards.DETAIL_FIELDS),
        (cards.correction_request_card("nl", correction_id="c-1", reference=REFERENCE, item=item,
                                       recipient=RECIPIENT, municipality=MUNICIPALITY, values={}, errors={}),
         cards.VERB_CORRECTION_SUBMIT, cards.VERB_CORRECTION_LATER, cards.ITEM_FIELDS[item]),
    ):
        by_verb = {action["verb"]: action for action in card["actions"]}
        assert set(by_verb) - {cards.VERB_CORRECTION_NONE} == {submit, other}
        assert by_verb[submit]["type"] == "Action.Execute"
        assert by_verb[submit].get("associatedInputs", "auto") == "auto"
        assert set(by_verb[submit]["data"]).isdisjoint(fields), "no input value is fixed in the data"
        assert by_verb[other]["associatedInputs"] == "none"
        if cards.VERB_CORRECTION_NONE in by_verb:  # "Er is geen juist ...": nothing typed goes with it
            assert by_verb[cards.VERB_CORRECTION_NONE]["associatedInputs"] == "none"
        inputs = [element for element in walk(card["body"]) if str(element.get("type", "")).startswith("Input.")]
        assert [element["id"] for element in inputs] == list(fields)
        assert not any(element.get("type") == "Action.ShowCard" for element in walk(card))
        assert not any("isRequired" in element for element in inputs)


def test_with_warning_puts_the_warning_above_the_card_and_leaves_the_card_itself_alone() -> None:
    card = cards.notice_card("nl", "Gemeld.")
    warning = cards.text("nl", "client_data_beside_command.shared")
    warned = cards.with_warning(card, warning)
    assert_complete_card(warned)
    assert warned["body"][0]["text"] == warning and warned["body"][1:] == card["body"]
    assert card["body"][0]["text"] == "Gemeld.", "the card given is not changed"
