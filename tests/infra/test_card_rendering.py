"""Every card, in Dutch and English, rendered by Microsoft's `adaptivecards` JS renderer in Chromium.

One PNG per card per language lands in `test-artifacts/cards/` (gitignored) to look at. The renderer
must build elements and report no parse or validation event; the page must fetch nothing remote.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import cards
from infra.card_gallery import CardSample, every_card, samples
from infra.card_renderer import CardRenderer, missing_requirements
from infra.render_card_screenshots import DOCS_DIR
from tests.infra.helpers import ROOT, require

ARTIFACTS = ROOT / "test-artifacts" / "cards"
ALL_CARDS = list(every_card())


@pytest.fixture(scope="module")
def renderer() -> Iterator[CardRenderer]:
    require(missing_requirements(), "make chromium node_modules/.installed")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with CardRenderer() as card_renderer:
        yield card_renderer
    assert card_renderer.blocked_requests == []


def count_actions(node: Any) -> int:
    if isinstance(node, dict):
        own = 1 if str(node.get("type", "")).startswith("Action.") and "title" in node else 0
        return own + sum(count_actions(value) for value in node.values())
    if isinstance(node, list):
        return sum(count_actions(item) for item in node)
    return 0


def count_inputs(node: Any) -> int:
    if isinstance(node, dict):
        own = 1 if str(node.get("type", "")).startswith("Input.") else 0
        return own + sum(count_inputs(value) for value in node.values())
    if isinstance(node, list):
        return sum(count_inputs(item) for item in node)
    return 0


@pytest.mark.parametrize(
    ("sample", "lang", "card"), ALL_CARDS, ids=[f"{sample.name}-{lang}" for sample, lang, _ in ALL_CARDS]
)
def test_the_renderer_draws_the_card_without_warnings(
    renderer: CardRenderer, sample: CardSample, lang: cards.Language, card: dict[str, Any]
) -> None:
    result, png = renderer.screenshot(card)
    path = ARTIFACTS / sample.file_name(lang)
    path.write_bytes(png)

    assert result.rendered
    assert result.problems == []
    assert result.element_count > 0
    assert result.text_blocks > 0
    assert len(result.buttons) == count_actions(card)
    assert all(result.buttons), "every button has a title"
    assert result.inputs >= count_inputs(card)
    assert renderer.console_errors == []
    assert renderer.blocked_requests == []
    with Image.open(path) as image:
        width, height = image.size
        assert width > 300
        assert height > 60


def test_the_rendered_text_is_the_card_text(renderer: CardRenderer) -> None:
    sample = next(s for s in samples() if s.name == "welcome")
    languages: tuple[tuple[cards.Language, str], ...] = (("nl", "nieuw"), ("en", "new"))
    for lang, word in languages:
        result = renderer.render(sample.card(lang))
        assert word in result.text
        assert "**" not in result.text, "markdown is rendered, not shown"


def test_the_renderer_reports_what_it_cannot_parse(renderer: CardRenderer) -> None:
    """So an empty list of problems above means something."""
    card = {
        "type": "AdaptiveCard",
        "version": "1.5",
        "body": [{"type": "TextBlok", "text": "typo"}, {"type": "Input.Text", "label": "no id"}],
    }
    result = renderer.render(card)
    events = {problem["event"] for problem in result.problems}
    assert "UnknownElementType" in events
    assert "PropertyCantBeNull" in events or "MissingCardObjectProperty" in events


def test_the_page_cannot_reach_the_internet(renderer: CardRenderer) -> None:
    card = {
        "type": "AdaptiveCard",
        "version": "1.5",
        "body": [{"type": "Image", "url": "https://example.org/tracker.png"}],
    }
    renderer.render(card)
    renderer._active_page().wait_for_timeout(200)
    assert renderer.blocked_requests == ["https://example.org/tracker.png"]
    renderer.blocked_requests.clear()


def test_every_card_in_the_guides_has_a_screenshot_in_both_languages() -> None:
    """`python -m infra.render_card_screenshots` writes them; the guides link to them."""
    expected = {sample.file_name(lang) for sample in samples() if sample.in_docs for lang in cards.LANGUAGES}
    present = {path.name for path in Path(DOCS_DIR).glob("*.png")}
    assert present == expected
