"""Render Adaptive Cards with Microsoft's JavaScript renderer in headless Debian Chromium.

The page is a local file that loads `adaptivecards` and `markdown-it` from `node_modules/`
(`npm ci` at the repository root): no CDN, no server. Every request that is not for a local
file or 127.0.0.1/localhost is aborted and remembered, so a test can prove nothing left the machine.

    with CardRenderer() as renderer:
        result = renderer.render(card)          # parse/validation events, element counts
        png = renderer.screenshot(card)         # the card alone, as PNG bytes
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from PIL import Image
from playwright.sync_api import Browser, Page, Playwright, Route, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "node_modules"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCRIPTS = (
    NODE_MODULES / "markdown-it" / "dist" / "browser" / "markdown-it.umd.min.js",
    NODE_MODULES / "adaptivecards" / "dist" / "adaptivecards.min.js",
)
STYLESHEET = NODE_MODULES / "adaptivecards" / "dist" / "adaptivecards.css"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
#: About the width of a card in a Teams chat.
CARD_WIDTH_PX = 460
#: Colours kept in the PNGs: enough for anti-aliased text, a fraction of the bytes.
PNG_COLOURS = 32

# A Teams-like light theme (fonts, sizes, colours); styling only, not a schema.
HOST_CONFIG: dict[str, Any] = {
    "fontFamily": "'Segoe UI', 'Liberation Sans', 'DejaVu Sans', sans-serif",
    "supportsInteractivity": True,
    "spacing": {"small": 8, "default": 12, "medium": 16, "large": 20, "extraLarge": 24, "padding": 16},
    "separator": {"lineThickness": 1, "lineColor": "#E1E1E1"},
    "fontSizes": {"small": 12, "default": 14, "medium": 14, "large": 18, "extraLarge": 24},
    "fontWeights": {"lighter": 300, "default": 400, "bolder": 600},
    "containerStyles": {
        "default": {
            "backgroundColor": "#FFFFFF",
            "foregroundColors": {
                "default": {"default": "#242424", "subtle": "#616161"},
                "accent": {"default": "#5B5FC7", "subtle": "#5B5FC7"},
                "attention": {"default": "#C4314B", "subtle": "#C4314B"},
                "good": {"default": "#237B4B", "subtle": "#237B4B"},
                "warning": {"default": "#835C00", "subtle": "#835C00"},
            },
        },
        "emphasis": {"backgroundColor": "#F5F5F5"},
    },
    "actions": {
        "maxActions": 6,
        "spacing": "default",
        "buttonSpacing": 8,
        "actionsOrientation": "horizontal",
        "actionAlignment": "left",
        "showCard": {"actionMode": "inline"},
    },
    "factSet": {
        "title": {"weight": "bolder", "wrap": True, "maxWidth": 150},
        "value": {"wrap": True},
        "spacing": 12,
    },
    "inputs": {"label": {"requiredInputs": {"suffix": " *"}, "optionalInputs": {}}},
}

_PAGE = """<!doctype html>
<html lang="nl">
<head>
<meta charset="utf-8">
<title>card</title>
<link rel="stylesheet" href="{stylesheet}">
<style>
  body {{ margin: 0; background: #F5F5F5; }}
  #host {{ width: {width}px; margin: 12px; background: #FFFFFF; border: 1px solid #E1E1E1; border-radius: 6px;
           overflow: hidden; }}
  .ac-pushButton {{ font-size: 14px; font-weight: 600; padding: 5px 12px; min-height: 32px;
                    border: 1px solid #D1D1D1; border-radius: 4px; background: #FFFFFF; color: #242424; }}
  .ac-pushButton.style-positive {{ background: #5B5FC7; border-color: #5B5FC7; color: #FFFFFF; }}
  #host input, #host select, #host textarea, #host button {{ font-family: {font}; font-size: 14px; }}
  .ac-textInput, .ac-multichoiceInput {{ padding: 5px 8px; border: 1px solid #D1D1D1; border-radius: 4px; }}
</style>
{scripts}
</head>
<body>
<div id="host"></div>
<script>
const md = window.markdownit({{ html: false, linkify: false, breaks: true }});
AdaptiveCards.AdaptiveCard.onProcessMarkdown = (text, result) => {{
  result.outputHtml = md.render(text);
  result.didProcess = true;
}};
const HOST_CONFIG = {host_config};
function describe(event) {{
  return {{
    phase: AdaptiveCards.ValidationPhase[event.phase],
    event: AdaptiveCards.ValidationEvent[event.event],
    message: event.message,
  }};
}}
window.renderCard = (payload) => {{
  const host = document.getElementById("host");
  host.replaceChildren();
  const card = new AdaptiveCards.AdaptiveCard();
  card.hostConfig = new AdaptiveCards.HostConfig(HOST_CONFIG);
  const context = new AdaptiveCards.SerializationContext(AdaptiveCards.Versions.v1_5);
  card.parse(payload, context);
  const parseEvents = [];
  for (let i = 0; i < context.eventCount; i++) parseEvents.push(describe(context.getEventAt(i)));
  const validationEvents = card.validateProperties().validationEvents.map(describe);
  const element = card.render();
  if (element) host.appendChild(element);
  const all = (selector) => element ? Array.from(element.querySelectorAll(selector)) : [];
  return {{
    rendered: Boolean(element),
    elementCount: all("*").length,
    textBlocks: all(".ac-textBlock").length,
    inputs: all("input, select, textarea").length,
    buttons: all("button").map((b) => b.textContent.trim()),
    text: element ? element.innerText : "",
    parseEvents,
    validationEvents,
  }};
}};
</script>
</body>
</html>
"""


class RendererUnavailable(RuntimeError):
    """Chromium or the npm packages are missing; the message says how to install them."""


@dataclass(frozen=True)
class RenderResult:
    """What the renderer made of one card."""

    rendered: bool
    element_count: int
    text_blocks: int
    inputs: int
    buttons: list[str]
    text: str
    parse_events: list[dict[str, Any]] = field(default_factory=list)
    validation_events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def problems(self) -> list[dict[str, Any]]:
        """Every parse or validation event: warnings and errors alike."""
        return [*self.parse_events, *self.validation_events]


def missing_requirements() -> list[str]:
    """What must be installed before cards can be rendered, with the command that installs it."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install -y chromium, or `make chromium`)")
    missing.extend(
        f"{path.relative_to(ROOT)} (npm ci --ignore-scripts, or `make node_modules/.installed`)"
        for path in (*SCRIPTS, STYLESHEET)
        if not path.exists()
    )
    return missing


class CardRenderer:
    """One headless Chromium page that renders card after card (a context manager)."""

    def __init__(self, *, width: int = CARD_WIDTH_PX) -> None:
        self._width = width
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._page: Page | None = None
        self._workdir: Path | None = None
        #: URLs the page tried to fetch from anywhere but this machine (all aborted).
        self.blocked_requests: list[str] = []
        #: Messages the page wrote to its console as errors, and uncaught page errors.
        self.console_errors: list[str] = []

    def __enter__(self) -> CardRenderer:
        missing = missing_requirements()
        if missing:
            raise RendererUnavailable("cannot render cards, missing: " + "; ".join(missing))
        self._workdir = Path(tempfile.mkdtemp(prefix="card-renderer-"))
        page_file = self._workdir / "card.html"
        page_file.write_text(self._page_html(), encoding="utf-8")
        self._playwright = sync_playwright().start()
        try:
            self._browser = self._playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            context = self._browser.new_context(viewport={"width": self._width + 40, "height": 800})
            context.route("**/*", self._only_local)
            self._page = context.new_page()
            self._page.on("console", lambda message: self._console(message.type, message.text))
            self._page.on("pageerror", lambda error: self.console_errors.append(str(error)))
            self._page.goto(page_file.as_uri())
            self._page.wait_for_function("typeof window.renderCard === 'function'")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._browser is not None:
            self._browser.close()
            self._browser = None
        if self._playwright is not None:
            self._playwright.stop()
            self._playwright = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def render(self, card: dict[str, Any]) -> RenderResult:
        """Parse, validate and render `card`; the card stays on the page for `screenshot`."""
        raw = self._active_page().evaluate("(payload) => window.renderCard(payload)", card)
        return RenderResult(
            rendered=raw["rendered"],
            element_count=raw["elementCount"],
            text_blocks=raw["textBlocks"],
            inputs=raw["inputs"],
            buttons=raw["buttons"],
            text=raw["text"],
            parse_events=raw["parseEvents"],
            validation_events=raw["validationEvents"],
        )

    def screenshot(self, card: dict[str, Any]) -> tuple[RenderResult, bytes]:
        """Render `card` and return the result with a compact PNG of the card alone."""
        result = self.render(card)
        png = self._active_page().locator("#host").screenshot(animations="disabled", caret="hide")
        return result, compact_png(png)

    def _active_page(self) -> Page:
        if self._page is None:
            raise RuntimeError("use CardRenderer as a context manager")
        return self._page

    def _page_html(self) -> str:
        scripts = "\n".join(f'<script src="{path.as_uri()}"></script>' for path in SCRIPTS)
        return _PAGE.format(
            stylesheet=STYLESHEET.as_uri(),
            width=self._width,
            font=HOST_CONFIG["fontFamily"],
            scripts=scripts,
            host_config=json.dumps(HOST_CONFIG),
        )

    def _only_local(self, route: Route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("file", "data", "blob") or (parts.hostname or "") in LOCAL_HOSTS:
            route.continue_()
        else:
            self.blocked_requests.append(url)
            route.abort()

    def _console(self, kind: str, text: str) -> None:
        if kind in ("error", "warning"):
            self.console_errors.append(f"{kind}: {text}")


def compact_png(png: bytes) -> bytes:
    """The same picture with at most `PNG_COLOURS` colours: a card screenshot shrinks to about a third."""
    with Image.open(io.BytesIO(png)) as image:
        reduced = image.convert("RGB").quantize(
            colors=PNG_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
        out = io.BytesIO()
        reduced.save(out, format="PNG", optimize=True)
    return out.getvalue()
