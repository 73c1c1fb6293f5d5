"""The DPO's register card: what it shows, and the links it refuses to build."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

import cards
from infra.card_gallery import REGISTER_VIEW
from tests.support.card_reading import texts, walk

UNTIL = dt.datetime(2026, 11, 28, 10, 20, tzinfo=dt.timezone(dt.timedelta(hours=1)))


def _card(lang: cards.Language = "nl", **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {"protocols": [REGISTER_VIEW], "chain_entries": 1391, "chain_problems": 0,
                                 "first_problem_seq": None, "links_until": UNTIL, "link_minutes": 15}
    return cards.register_export_card(lang, **{**arguments, **overrides})


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_the_card_shows_counts_period_last_hash_and_two_links(lang: cards.Language) -> None:
    card = _card(lang)
    shown = texts(card)
    assert REGISTER_VIEW.last_hash is not None and REGISTER_VIEW.last_hash in shown
    assert "1284" in shown and "02/03/2026" in shown and "28/11/2026" in shown and "1391" in shown
    links = [element for element in walk(card) if element.get("type") == "Action.OpenUrl"]
    assert [link["url"] for link in links] == [REGISTER_VIEW.csv_url, REGISTER_VIEW.json_url]
    assert not [element for element in walk(card) if element.get("type") == "Action.Execute"]
    assert "28/11/2026 10:20" in shown


def test_without_links_the_card_names_the_setting() -> None:
    card = _card(protocols=[dataclasses.replace(REGISTER_VIEW, csv_url="", json_url="")], links_until=None)
    assert "PUBLIC_BASE_URL" in texts(card) and "Action.OpenUrl" not in texts(card)


def test_an_empty_register_says_so() -> None:
    empty = dataclasses.replace(REGISTER_VIEW, entries=0, first_day=None, last_day=None, last_seq=None, last_hash=None)
    shown = texts(_card(protocols=[empty]))
    assert "nog geen regels" in shown and "Laatste hash" not in shown


def test_a_broken_chain_is_red() -> None:
    [chain] = [element for element in walk(_card(chain_problems=3, first_problem_seq=17))
               if "hashketen" in str(element.get("text", ""))]
    assert chain["color"] == "attention" and "regel 17" in chain["text"] and "3" in chain["text"]


@pytest.mark.parametrize("overrides", [
    {"protocols": []},
    {"chain_problems": 2},  # problems without saying where the first is
    {"links_until": None},  # links on a card that says there are none
    {"protocols": [dataclasses.replace(REGISTER_VIEW, json_url="")]},
    {"protocols": [dataclasses.replace(REGISTER_VIEW, csv_url="http://bot.example.be/register/export/x")]},
])
def test_inconsistent_input_is_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(cards.CardError):
        _card(**overrides)
