"""The "are you sure?" card before an action that cannot be undone.

Withdrawing consent, "wil geen hulp", "niet bereikt", "gegevens verwijderd", cancelling a filled-in
referral, "er is geen juist telefoonnummer" on a correction card: the first click answers with this card
(the reference, what will happen, a red confirm button that repeats the action with `confirmed: "true"`,
and Terug, which shows the card as it was).
Its texts come from the catalogue under `confirm.<kind>.question` and `.explanation`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from cards._errors import CardError
from cards._render import Card, render
from cards._texts import Language, text

#: What can be confirmed; each has `confirm.<kind>.question`, `.explanation` and `.button` texts.
CONFIRMATIONS: Final = frozenset({
    "withdraw_consent", "no_help_wanted", "unreachable", "data_deleted", "data_filed_and_deleted", "cancel_referral",
    "correction_none",
})
#: The verb of the "Terug" button: shows the referral's (or the draft's) card as it was.
VERB_VIEW: Final = "referral.view"
CONFIRMED: Final = "confirmed"


def confirm_card(
    lang: Language,
    kind: str,
    *,
    reference: str,
    verb: str,
    data: Mapping[str, str],
    back: Mapping[str, str],
    back_verb: str = VERB_VIEW,
    params: Mapping[str, str] | None = None,
) -> Card:
    """Ask once more before `verb` with `data`; confirming repeats it with `confirmed: "true"`.

    `params` fill the texts beside the reference (the item of a correction); `back_verb` is what Terug does
    where the card clicked was not the referral's own (a correction card: show it again)."""
    more = dict(params or {})
    if kind not in CONFIRMATIONS:
        raise CardError(f"confirm_card: unknown confirmation {kind!r}")
    return render("confirm", lang, {
        "question": text(lang, f"confirm.{kind}.question", reference=reference, **more),
        "explanation": text(lang, f"confirm.{kind}.explanation", reference=reference, **more),
        "reference": reference,
        "confirmTitle": text(lang, f"confirm.{kind}.button", **more),
        "confirmVerb": verb,
        "confirmData": {**data, CONFIRMED: "true"},
        "backVerb": back_verb,
        "backData": dict(back),
    })


def is_confirmed(data: Mapping[str, object]) -> bool:
    """The action comes from the confirm button."""
    return data.get(CONFIRMED) == "true"
