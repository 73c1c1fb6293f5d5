"""The family's information sheet over real HTTP: public, one printable page, every point, nothing loaded."""

from __future__ import annotations

import html.parser
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

import cards
from bot.app import create_app
from bot.config import Settings
from bot.core.protocols import load_registry
from bot.referral.information_sheet import sheet_path
from tests.conftest import ZIP_PASSWORD
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.clock import ManualClock
from tests.support.family_information import NUDGES, missing_points
from tests.support.sample_values import PROTOCOL_ID

SHIPPED = Settings().protocols_dir
PUBLIC_BASE_URL = "https://vd.example.be"
PUBLISHED = "https://www.opgroeien.be/protocollen/OR-KG-NOW-OCMW-SGW-2026.pdf"
#: The visible text of the sheet, at most. Measured in Chromium (tests/infra/test_information_sheet_print.py)
#: with its CSS (10 pt, A4, 12 mm margins) and Arial's metrics, 2,830 characters in 20 blocks, a
#: 120-character publication address included, fill 78 % of the page; 3,200 keeps about 10 % for a
#: wider font (Segoe UI) and a longer OCMW name. Above it the sheet is likely to need a second page.
MAX_VISIBLE_CHARACTERS = 3200
#: Headings and paragraphs, at most: each adds spacing the character count does not see.
MAX_BLOCKS = 24


class VisibleText(html.parser.HTMLParser):
    """The text a reader sees, per block (heading, paragraph, list item, footer), and what the page loads."""

    BLOCKS = frozenset({"h1", "h2", "p", "dt", "dd", "footer"})

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[str] = []
        self.tags: list[str] = []
        self.links: list[str] = []
        self._hidden = 0
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [value or "" for name, value in attrs if name in {"href", "src"}]
        if tag in {"style", "title", "script"}:
            self._hidden += 1
        if tag in self.BLOCKS:
            self._open.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in {"style", "title", "script"}:
            self._hidden -= 1
        if tag in self.BLOCKS:
            self.blocks.append(" ".join(self._open.pop().split()))

    def handle_data(self, data: str) -> None:
        if self._open and not self._hidden:
            self._open[-1] += data

    @property
    def text(self) -> str:
        return "\n".join(self.blocks)


def read(page: str) -> VisibleText:
    parser = VisibleText()
    parser.feed(page)
    parser.close()
    return parser


@pytest.fixture
def protocols_dir(tmp_path: Path) -> Path:
    """The shipped protocol, with its publication address filled in."""
    folder = tmp_path / "protocols"
    folder.mkdir()
    text = (SHIPPED / "sint-gillis-waas.toml").read_text("utf-8")
    (folder / "sint-gillis-waas.toml").write_text(text.replace("# published_at = ", f'published_at = "{PUBLISHED}" # '))
    return folder


async def _bot(tmp_path: Path, clock: ManualClock, **env: str) -> AsyncIterator[BotDriver]:
    settings = Settings.from_mapping({"BOT_DATA_DIR": str(tmp_path / "data"), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
                                      **env})
    async with running_bot(create_app(settings, clock=clock, run_worker=False)) as driver:
        yield driver


@pytest.fixture
async def public_bot(tmp_path: Path, clock: ManualClock, protocols_dir: Path) -> AsyncIterator[BotDriver]:
    async for driver in _bot(tmp_path, clock, PUBLIC_BASE_URL=PUBLIC_BASE_URL, PROTOCOLS_DIR=str(protocols_dir)):
        yield driver


async def get(bot: BotDriver, path: str, **headers: str) -> tuple[aiohttp.ClientResponse, str]:
    async with bot.session.get(bot.bot_url + path, headers=headers, allow_redirects=False) as response:
        return response, await response.text()


@pytest.mark.parametrize("suffix", ["", ".html"])
async def test_the_sheet_is_a_public_dutch_html_page(public_bot: BotDriver, suffix: str) -> None:
    response, page = await get(public_bot, sheet_path(PROTOCOL_ID) + suffix)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.startswith("<!DOCTYPE html>") and '<html lang="nl-BE">' in page
    assert "Set-Cookie" not in response.headers


async def test_the_sheet_tells_every_point_with_the_protocols_addresses(public_bot: BotDriver,
                                                                        protocols_dir: Path) -> None:
    _, page = await get(public_bot, sheet_path(PROTOCOL_ID))
    sheet = read(page)
    [protocol] = load_registry(protocols_dir).all()

    assert missing_points(sheet.text) == {}
    assert f"DPO Opgroeien regie\n{protocol.sender_dpo}" in sheet.text
    assert f"DPO OCMW Sint-Gillis-Waas\n{protocol.recipient_dpo}" in sheet.text
    assert {f"mailto:{protocol.sender_dpo}", f"mailto:{protocol.recipient_dpo}"} <= set(sheet.links)
    assert cards.text("nl", "consent.complaint.text") in sheet.text
    assert NUDGES.search(sheet.text) is None, NUDGES.search(sheet.text)
    assert protocol.title in sheet.text and protocol.id in sheet.text and "01/03/2026" in sheet.text
    assert protocol.sender.team in sheet.text
    assert f"Je kan het protocol lezen op {PUBLISHED}." in sheet.text and PUBLISHED in sheet.links
    assert f"Tekstversie {cards.consent_text_version()}" in sheet.blocks[-1]
    assert f"{PUBLIC_BASE_URL}{sheet_path(PROTOCOL_ID)}" in sheet.blocks[-1], "where to find it again"


async def test_the_sheet_uses_the_consent_cards_own_words(public_bot: BotDriver) -> None:
    _, page = await get(public_bot, sheet_path(PROTOCOL_ID))
    text = read(page).text
    for key in ("consent.data.text", "consent.recipient.network", "consent.purpose.text", "consent.follow_up.text",
                "consent.rights.text", "consent.complaint.text", "consent.consent.text"):
        assert cards.text("nl", key) in text, key
    assert cards.text("nl", "consent.recipient.text_one", ocmw="OCMW Sint-Gillis-Waas") in text


async def test_the_sheet_loads_nothing_runs_nothing_and_keeps_to_one_page(public_bot: BotDriver) -> None:
    response, page = await get(public_bot, sheet_path(PROTOCOL_ID))
    sheet = read(page)
    assert not {"script", "img", "link", "iframe", "object", "embed", "form", "input"} & set(sheet.tags)
    assert all(link.startswith(("mailto:", "https://")) for link in sheet.links), sheet.links
    policy = response.headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'; style-src 'sha256-") and "script-src" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "@page { size: A4;" in page
    visible = sum(len(block) for block in sheet.blocks)
    assert visible <= MAX_VISIBLE_CHARACTERS, f"{visible} characters may not fit on one A4 page"
    assert len(sheet.blocks) <= MAX_BLOCKS


async def test_without_a_publication_address_the_sheet_says_where_the_parties_publish(
    tmp_path: Path, clock: ManualClock
) -> None:
    async for bot in _bot(tmp_path, clock):
        _, page = await get(bot, sheet_path(PROTOCOL_ID))
    text = read(page).text
    assert "Het protocol staat op de website van Opgroeien regie en van OCMW Sint-Gillis-Waas." in text
    assert "staat ook online" not in text, "no PUBLIC_BASE_URL: the bot does not know its own address"


async def test_the_sheet_needs_no_bot_framework_token(
    tmp_path: Path, clock: ManualClock, referrer: TeamsUser
) -> None:
    """With authentication on, /api/messages refuses a request without a token; the sheet is public."""
    async for bot in _bot(tmp_path, clock, MicrosoftAppId="00000000-0000-4000-8000-00000000b07d",
                          MicrosoftAppPassword="not-used-here", MicrosoftAppTenantId="72f988bf-0000-4000-8000-1"):
        refused = await bot.post(referrer.message(bot.service_url, "nieuw"))
        response, page = await get(bot, sheet_path(PROTOCOL_ID))
    assert refused.status == 401
    assert response.status == 200 and "Informatie voor het gezin" in page


@pytest.mark.parametrize("path", ["/informatieblad/OR-KG-ONBEKEND", "/informatieblad/..%2Fprotocols",
                                  "/informatieblad/" + "A" * 300, "/informatieblad/<script>.html"])
async def test_an_unknown_protocol_gets_a_dutch_404_that_repeats_nothing(public_bot: BotDriver, path: str) -> None:
    response, page = await get(public_bot, path)
    assert response.status == 404
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert cards.text("nl", "consent.sheet.not_found.title") in page
    assert "ONBEKEND" not in page and "<script>" not in page and "AAAA" not in page


async def test_a_protocol_file_added_while_the_bot_runs_has_its_sheet_at_once(
    public_bot: BotDriver, protocols_dir: Path
) -> None:
    text = (protocols_dir / "sint-gillis-waas.toml").read_text("utf-8")
    beveren = (text.replace(PROTOCOL_ID, "OR-KG-NOW-OCMW-BEV-2026").replace("OCMW Sint-Gillis-Waas", "OCMW Beveren")
               .replace('postal_codes = ["9170"]', 'postal_codes = ["9120"]'))
    (protocols_dir / "beveren.toml").write_text(beveren, "utf-8")
    response, page = await get(public_bot, sheet_path("OR-KG-NOW-OCMW-BEV-2026"))
    assert response.status == 200 and "je gegevens naar OCMW Beveren" in page
    shutil.rmtree(protocols_dir)
    protocols_dir.mkdir()
    (protocols_dir / "beveren.toml").write_text(beveren, "utf-8")
    response, _ = await get(public_bot, sheet_path(PROTOCOL_ID))
    assert response.status == 404, "a removed protocol file has no sheet any more"


def test_the_sheet_path_is_the_protocol_id() -> None:
    assert sheet_path(PROTOCOL_ID) == "/informatieblad/OR-KG-NOW-OCMW-SGW-2026"
