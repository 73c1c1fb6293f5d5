"""The DPO's register card: per protocol the counts, period, last hash and two download links.

It holds no client data and no staff names: counts, dates, a sequence number, a SHA-256 hash and the
links. The links are `Action.OpenUrl` to the bot's own public https address (a browser downloads the
file; Teams cannot attach one to a card).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from cards._errors import CardError
from cards._render import Card, format_time, render
from cards._template import render_part
from cards._texts import Language, text

_DATE_FORMAT = "%d/%m/%Y"


@dataclass(frozen=True)
class RegisterProtocolView:
    """One protocol's register as the DPO's card shows it; days are local, the URLs "" without a public address."""

    ocmw: str
    protocol_id: str
    entries: int
    first_day: dt.date | None
    last_day: dt.date | None
    last_seq: int | None
    last_hash: str | None
    csv_url: str = ""
    json_url: str = ""


#: The protocols one `register` card shows (a DPO of Opgroeien is named in one protocol per OCMW).
REGISTER_MAX_PROTOCOLS: Final = 20


def register_export_card(
    lang: Language,
    *,
    protocols: Sequence[RegisterProtocolView],
    chain_entries: int,
    chain_problems: int,
    first_problem_seq: int | None,
    links_until: dt.datetime | None,
    link_minutes: int,
    not_shown: int = 0,
) -> Card:
    """The answer to `register` for a DPO: whether the whole chain verifies, and each protocol's summary.

    `links_until` (local time) is when the links stop working; None when there are none (no
    `PUBLIC_BASE_URL`): then the card says who can set it. At most `REGISTER_MAX_PROTOCOLS`
    protocols (~1.1 KB each; Teams refuses a message over 40 KB); `not_shown` more are named by
    count, with how to see them (`register <part of a name>`).
    """
    if not protocols or len(protocols) > REGISTER_MAX_PROTOCOLS:
        raise CardError(f"register_export_card: 1 to {REGISTER_MAX_PROTOCOLS} protocols, not {len(protocols)}")
    if chain_problems and first_problem_seq is None:
        raise CardError("register_export_card: problems without the first one's entry")
    values: dict[str, Any] = {
        "chainText": text(lang, "register.chain_broken", count=str(chain_problems), seq=str(first_problem_seq))
        if chain_problems else text(lang, "register.chain_ok", count=str(chain_entries)),
        "chainColor": "attention" if chain_problems else "good",
        "protocols": [_protocol(lang, view, with_links=links_until is not None) for view in protocols],
        "moreText": text(lang, "register.more", shown=str(len(protocols)), count=str(not_shown)) if not_shown else "",
        "linkText": text(lang, "register.links_need_base_url") if links_until is None
        else text(lang, "register.links_valid", time=format_time(links_until), minutes=str(link_minutes)),
    }
    return render("register_export", lang, values)


def _protocol(lang: Language, view: RegisterProtocolView, *, with_links: bool) -> Any:
    for url in (view.csv_url, view.json_url):
        if with_links != bool(url) or (url and not url.startswith("https://")):
            raise CardError("register_export_card: both links, https, exactly when the card has links")
    period = text(lang, "register.period_empty") if view.first_day is None or view.last_day is None else text(
        lang, "register.period", first=view.first_day.strftime(_DATE_FORMAT), last=view.last_day.strftime(_DATE_FORMAT)
    )
    return render_part(
        "register_protocol",
        {
            "heading": text(lang, "register.protocol", ocmw=view.ocmw, protocol=view.protocol_id),
            "entriesLabel": text(lang, "register.fact.entries"),
            "entries": str(view.entries),
            "periodLabel": text(lang, "register.fact.period"),
            "period": period,
            "lastEntryLabel": text(lang, "register.fact.last_entry"),
            "lastEntry": "–" if view.last_seq is None else text(lang, "register.last_entry", seq=str(view.last_seq)),
            "lastHashLabel": text(lang, "register.last_hash"),
            "lastHash": view.last_hash or "",
            "csvTitle": text(lang, "register.download_csv"),
            "csvUrl": view.csv_url,
            "jsonTitle": text(lang, "register.download_json"),
            "jsonUrl": view.json_url,
        },
    )
