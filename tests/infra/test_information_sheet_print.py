"""The family's information sheet printed by headless Debian Chromium: one A4 page, its style allowed, nothing fetched.

The page is served to the browser with the bot's own headers (its Content-Security-Policy included),
so a style the policy would block, or a resource the page would load, shows up here. A PDF of each
sheet lands in `test-artifacts/information-sheet/` (gitignored) to look at.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Route, sync_playwright

import cards
from bot.config import Settings
from bot.core.protocols import load_registry
from bot.referral.information_sheet import _HEADERS, protocol_facts, sheet_path
from infra.card_renderer import CHROMIUM, CHROMIUM_ARGS
from tests.infra.helpers import ROOT, require

ARTIFACTS = ROOT / "test-artifacts" / "information-sheet"
BASE_URL = "https://vd.example.be"
SHIPPED = protocol_facts(load_registry(Settings().protocols_dir).all()[0], BASE_URL)
#: Longer than any real protocol is likely to be: the sheet must still fit.
LONG = dataclasses.replace(
    SHIPPED,
    id="OR-KG-ZWV-OCMW-SLH-2027",
    title="Protocol Opgroeien regie - OCMW Sint-Lievens-Houtem (onderbescherming, toegang tot hulp- en "
          "dienstverlening)",
    sender_team="Kind en Gezin team Zuid-West-Vlaanderen en Meetjesland-Leiestreek",
    recipient="OCMW Sint-Lievens-Houtem",
    recipient_dpo="functionaris.gegevensbescherming@sint-lievens-houtem.be",
    published_at="https://www.opgroeien.be/sites/default/files/documents/protocollen/"
                 "protocol-ocmw-sint-lievens-houtem-onderbescherming-2027.pdf",
    sheet_url=BASE_URL + sheet_path("OR-KG-ZWV-OCMW-SLH-2027"),
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require([] if CHROMIUM.exists() else [f"{CHROMIUM} (apt-get install -y chromium)"], "make chromium")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.mark.parametrize("facts", [SHIPPED, LONG], ids=["shipped", "long-names"])
def test_the_sheet_prints_on_one_a4_page_with_its_style_and_nothing_fetched(
    browser: Browser, facts: cards.ProtocolFacts
) -> None:
    page_html = cards.information_sheet_html(facts, online_url=facts.sheet_url)
    fetched: list[str] = []
    problems: list[str] = []

    def serve(route: Route) -> None:
        if route.request.url == facts.sheet_url:
            route.fulfill(status=200, body=page_html.encode("utf-8"),
                          headers={**_HEADERS, "Content-Type": "text/html; charset=utf-8"})
        else:
            fetched.append(route.request.url)
            route.abort()

    context = browser.new_context()
    try:
        context.route("**/*", serve)
        page = context.new_page()
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(facts.sheet_url)
        assert page.evaluate("getComputedStyle(document.querySelector('h1')).fontSize") == "18.6667px", (
            "the inline style was applied (14 pt): the policy's hash matches it"
        )
        pdf = page.pdf(prefer_css_page_size=True, print_background=False)
    finally:
        context.close()
    (ARTIFACTS / f"{facts.id}.pdf").write_bytes(pdf)
    assert len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf)) == 1, "the sheet must fit on one A4 page"
    assert fetched == [] and problems == []


def test_the_artifacts_folder_is_ignored_by_git() -> None:
    assert "test-artifacts" in (ROOT / ".gitignore").read_text("utf-8")
