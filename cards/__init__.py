"""Adaptive Cards (schema 1.5, Action.Execute) and chat texts of the referral bot, in Dutch and English.

Cards are JSON templates in `templates/`, filled structurally by `_template`; texts come from
`texts/nl.json` (default) and `texts/en.json`. Every function returns a complete AdaptiveCard dict.
"""

from cards._errors import CardError
from cards._markdown import escape_markdown
from cards._render import (
    CONSENT_INPUTS,
    CONSENT_TOGGLES,
    DETAIL_FIELDS,
    FIELD_ERROR_CODES,
    FIELD_MAX_LENGTHS,
    PROBLEMS,
    VERB_CANCEL,
    VERB_CONSENT,
    VERB_DETAILS,
    VERB_EDIT,
    VERB_SEND,
    VERB_START,
    VERBS,
    Card,
    cancelled_card,
    consent_card,
    details_card,
    field_error_text,
    problem_card,
    queued_card,
    review_card,
    sent_card,
    welcome_card,
)
from cards._template import TemplateError
from cards._texts import LANGUAGES, Language, language_for, text

__all__ = [
    "CONSENT_INPUTS",
    "CONSENT_TOGGLES",
    "DETAIL_FIELDS",
    "FIELD_ERROR_CODES",
    "FIELD_MAX_LENGTHS",
    "LANGUAGES",
    "PROBLEMS",
    "VERBS",
    "VERB_CANCEL",
    "VERB_CONSENT",
    "VERB_DETAILS",
    "VERB_EDIT",
    "VERB_SEND",
    "VERB_START",
    "Card",
    "CardError",
    "Language",
    "TemplateError",
    "cancelled_card",
    "consent_card",
    "details_card",
    "escape_markdown",
    "field_error_text",
    "language_for",
    "problem_card",
    "queued_card",
    "review_card",
    "sent_card",
    "text",
    "welcome_card",
]
