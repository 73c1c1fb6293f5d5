"""What the follow-up cards show of a referral after "send": references, organisations, staff, times.

These views never hold client data (no name, address, phone or e-mail): the caller builds them from
the referral record. Times are already local (the card prints them as they are).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, get_args

#: An item of client data the OCMW can report wrong, and a correction can carry.
ReferralItem = Literal["name", "address", "phone", "email"]
#: Where a delivered referral stands, as the OCMW's card shows it.
OcmwState = Literal[
    "sent", "received", "help_wanted", "no_help_wanted", "unreachable", "data_deleted", "consent_withdrawn"
]
#: The one-line message on top of the OCMW's card, answering the button just pressed.
Notice = Literal[
    "already_acknowledged", "quality_item_missing", "quality_reported", "quality_reported_protocol_ended",
    "superfluous_reported", "outcome_already_recorded", "deletion_recorded",
]
#: Where any referral stands, as the status list shows it.
StatusState = Literal[
    "queued",
    "sent",
    "failed",
    "received",
    "help_wanted",
    "no_help_wanted",
    "unreachable",
    "data_deleted",
    "consent_withdrawn",
]
#: What the OCMW records after contacting the family (the `outcome` of verb referral.outcome).
Outcome = Literal["contact_help_wanted", "contact_no_help_wanted", "unreachable"]

REFERRAL_ITEMS: tuple[ReferralItem, ...] = get_args(ReferralItem)
OCMW_STATES: tuple[OcmwState, ...] = get_args(OcmwState)
NOTICES: tuple[Notice, ...] = get_args(Notice)
STATUS_STATES: tuple[StatusState, ...] = get_args(StatusState)
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)


@dataclass(frozen=True)
class OcmwReferralView:
    """One delivered package as the OCMW's channel card shows it, in its current state.

    The `*_by` names are Teams display names (user-controlled; the card escapes them). Each pair
    `*_by`/`*_at` is given together or not at all. `correction_of` and `corrected_item` are given
    together for a package that corrects one item of an earlier referral. `reported_items` are the
    items the OCMW already reported wrong. `notice` is one of `NOTICES`.
    """

    reference: str
    sent_at: dt.datetime
    sender_team: str
    recipient: str
    mailbox: str
    key_version: str
    state: OcmwState
    acknowledged_by: str | None = None
    acknowledged_at: dt.datetime | None = None
    outcome_by: str | None = None
    outcome_at: dt.datetime | None = None
    deleted_by: str | None = None
    deleted_at: dt.datetime | None = None
    correction_of: str | None = None
    corrected_item: ReferralItem | None = None
    reported_items: tuple[str, ...] = ()
    notice: str | None = None


@dataclass(frozen=True)
class StatusRow:
    """One referral in a status list; `state` is one of `STATUS_STATES`, `outcome` one of `OUTCOMES`."""

    reference: str
    recipient: str
    state: str
    queued_at: dt.datetime
    sent_at: dt.datetime | None
    acknowledged_at: dt.datetime | None
    outcome: str | None
    teams_message_lost: bool = False  # a Teams message about it was given up on
    awaiting_deletion: bool = False  # the OCMW still has to confirm it deleted the data


@dataclass(frozen=True)
class ProtocolFacts:
    """What the family is told about one protocol, from its file: the consent card and the information sheet.

    `sender_dpo` and `recipient_dpo` are the DPOs' e-mail addresses (article 9). `published_at` is where
    the signed protocol is published ("" when the file does not say); `sheet_url` is the information
    sheet's public address ("" when the bot has no `PUBLIC_BASE_URL`: the card then has no link).
    """

    id: str
    title: str
    sender: str
    sender_team: str
    sender_dpo: str
    recipient: str
    recipient_dpo: str
    in_force_from: dt.date
    published_at: str = ""
    sheet_url: str = ""
