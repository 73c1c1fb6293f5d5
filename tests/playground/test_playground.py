"""A referral clicked through the Microsoft 365 Agents Playground, from the referrer's chat to the OCMW channel.

The real bot (`python -m bot serve`: outbox mail transport, a temporary data folder, a fixed ZIP
password) and the real Playground (npm `@microsoft/m365agentsplayground`) run as processes, started by
`infra.run_with_playground` exactly as `make run` starts them. Debian Chromium, driven by Playwright,
types and clicks like a user; every request to anything but this machine is aborted. A screenshot of
each step lands in `test-artifacts/playground/` (gitignored).

The Playground sends locale en-US with every activity, so the referrer's cards are in English; the
cards the bot posts in the OCMW channel are always Dutch. Texts come from `cards`, not copies.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, Route, expect, sync_playwright

import cards
from infra.card_renderer import CHROMIUM, CHROMIUM_ARGS, LOCAL_HOSTS
from infra.run_with_playground import (
    BOT_NAME,
    CHANNEL_NAME,
    ROOT,
    TEAM_NAME,
    OutputReader,
    Stack,
    playground_config,
    playground_missing,
    running_stack,
)
from tests.infra.helpers import require
from tests.support import sevenzip

ARTIFACTS = ROOT / "test-artifacts" / "playground"
PROTOCOL = tomllib.loads((ROOT / "infra" / "protocols" / "sint-gillis-waas.toml").read_text(encoding="utf-8"))
OCMW_NAME = PROTOCOL["recipient"]["organisation"]
ZIP_PASSWORD = "K7M2QX9PLR4TWB8N6VHJ3CZD"
USER_NAME = playground_config()["currentUser"]["name"]
#: The Playground (0.2.28) hard-codes locale en-US in every activity it sends.
CHAT = cards.language_for("en-US")
#: The bot posts the OCMW's cards in Dutch.
OCMW: cards.Language = "nl"
REFERENCE = re.compile(r"VD-\d{8}-[0-9A-Z]{6}")
WAIT_MS = 20_000
PERSONAL_CHAT = "Personal Chat"
MESSAGE_BOX = 'div[data-lexical-editor="true"][role="textbox"]'
CLIENT = {
    "firstName": "Sara",
    "lastName": "Peeters",
    "street": "Kerkstraat",
    "houseNumber": "12",
    "postalCode": "9170",
    "municipality": "Sint-Gillis-Waas",
}
CONSENT_TOGGLES = ("data", "recipient", "purpose", "follow_up", "consent")
#: Where the Playground's own telemetry would go, were it on.
TELEMETRY_HOSTS = ("applicationinsights", "monitor.azure.com", "visualstudio.com")


def text(lang: cards.Language, key: str, **params: str) -> str:
    return cards.text(lang, key, **params)


def pattern(lang: cards.Language, key: str, *, anything: tuple[str, ...], **params: str) -> re.Pattern[str]:
    """The text `key` as a regular expression in which the parameters named in `anything` match any text."""
    sentinel = "\x00"
    filled = cards.text(lang, key, **params, **dict.fromkeys(anything, sentinel))
    return re.compile(".+?".join(re.escape(part) for part in filled.split(sentinel)))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def requirements(*, browser: bool = True) -> None:
    """Skip here, fail on CI (`CI` set), when the Playground (or Chromium and 7-Zip) are missing."""
    missing = [reason for reason in (playground_missing(),) if reason]
    if not browser:
        require(missing, "make node_modules/.installed")
        return
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    if not sevenzip.available():
        missing.append("7zz (apt-get install -y 7zip)")
    require(missing, "make node_modules/.installed chromium tools")


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    """A bare environment: nothing from the developer's shell (Azure, SMTP ...) reaches the processes."""
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TMPDIR": str(tmp),
            "LANG": "C.UTF-8"}


@pytest.fixture
def bot_env(environment: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**environment, "BOT_DATA_DIR": str(tmp_path / "data"), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD}


@pytest.fixture
def stack(environment: dict[str, str], bot_env: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    requirements()
    workdir = tmp_path / "playground"
    workdir.mkdir()
    with running_stack(host="127.0.0.1", port=free_port(), playground_port=0, bot_env=bot_env,
                       playground_env=environment, workdir=workdir) as running:
        yield running


@dataclass
class Browser:
    page: Page
    blocked: list[str] = field(default_factory=list)
    steps: int = 0

    def shot(self, name: str, showing: Locator | None = None) -> None:
        """A numbered screenshot of the window, after scrolling `showing` into view."""
        if showing is not None:
            for attempt in range(3):
                try:
                    showing.scroll_into_view_if_needed()
                    break
                except PlaywrightError as error:  # the chat drew the message anew meanwhile: find it again
                    if "not attached" not in str(error) or attempt == 2:
                        raise
        self.steps += 1
        self.page.screenshot(path=ARTIFACTS / f"{self.steps:02d}-{name}.png", animations="disabled", caret="hide")


@pytest.fixture
def browser(stack: Stack) -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = chromium.new_context(viewport={"width": 1280, "height": 1000})
            blocked: list[str] = []

            def only_local(route: Route) -> None:
                if (urlsplit(route.request.url).hostname or "") in LOCAL_HOSTS:
                    route.continue_()
                else:
                    blocked.append(route.request.url)
                    route.abort()

            context.route("**/*", only_local)
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            yield Browser(page=page, blocked=blocked)
        finally:
            chromium.close()
            expect.set_options(timeout=None)  # back to Playwright's default for other tests


def card_with(page: Page, content: str | re.Pattern[str]) -> Locator:
    """The (last) Adaptive Card on the page showing `content`."""
    return page.locator(".ac-adaptiveCard").filter(has_text=content).last


def message(page: Page, content: str | re.Pattern[str]) -> Locator:
    """A message in the open conversation (the chat list on the left shows previews of the last ones)."""
    return page.get_by_role("paragraph").filter(has_text=content)


def open_conversation(page: Page, name: str) -> None:
    """Click a chat or channel in the list on the left (channels are named "<team> - <channel>")."""
    page.get_by_role("treeitem", name=name, exact=True).click()


def say(page: Page, words: str) -> None:
    box = page.locator(MESSAGE_BOX)
    box.click()
    box.press_sequentially(words)
    page.locator('button[aria-label="Send Message"]').click()


def button(card: Locator, lang: cards.Language, key: str, **params: str) -> Locator:
    return card.get_by_role("button", name=text(lang, key, **params), exact=True)


def field_input(card: Locator, name: str) -> Locator:
    """The input labelled `field.<name>.label`: the label matches as a part of any accessible name, and a button
    can contain it too ("There is no correct phone number" on a correction card)."""
    return card.locator("input, textarea").and_(card.get_by_label(text(CHAT, f"field.{name}.label")))


def wait_for_file(folder: Path, glob: str, timeout: float = 15.0) -> list[Path]:
    """The outbox worker writes in the background: poll until a file is there (or fail after `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(folder.glob(glob))
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {glob} in {folder} after {timeout:.0f} s")


def refer_a_family(browser: Browser, *, first_an_incomplete_phone: bool) -> str:
    """The referrer's whole dialogue in the personal chat; returns the reference shown at the end."""
    page = browser.page
    open_conversation(page, PERSONAL_CHAT)
    say(page, "nieuw")

    consent = card_with(page, text(CHAT, "consent.title"))
    expect(consent).to_be_visible()
    ocmw_choice = consent.get_by_role("combobox")
    if ocmw_choice.count() and ocmw_choice.input_value() != OCMW_NAME:
        ocmw_choice.click()
        page.get_by_role("option", name=OCMW_NAME, exact=True).click()
    for toggle in CONSENT_TOGGLES:
        consent.get_by_role("checkbox", name=text(CHAT, f"consent.{toggle}.toggle")).check()
    browser.shot("consent-ticked", consent)
    button(consent, CHAT, "action.continue").click()

    details = card_with(page, text(CHAT, "details.title"))
    expect(details).to_be_visible()
    for name, value in CLIENT.items():
        field_input(details, name).fill(value)
    if first_an_incomplete_phone:
        field_input(details, "phone").fill("0470 12")
        button(details, CHAT, "action.continue").click()
        phone_error = details.get_by_text(text(CHAT, "error.phone_too_short"))
        expect(phone_error).to_be_visible()
        browser.shot("details-phone-incomplete", phone_error)
        expect(field_input(details, "phone")).to_have_value("0470 12")
        phone_box, error_box, email_box = (
            locator.bounding_box()
            for locator in (field_input(details, "phone"), phone_error, field_input(details, "email"))
        )
        assert phone_box and error_box and email_box
        assert phone_box["y"] < error_box["y"] < email_box["y"], "the error is shown under the phone field"
    field_input(details, "phone").fill("0470 12 34 56")
    button(details, CHAT, "action.continue").click()

    reviews = page.locator(".ac-adaptiveCard").filter(has_text=text(CHAT, "review.title"))
    review = reviews.last
    expect(review).to_be_visible()
    expect(review).to_contain_text(PROTOCOL["recipient"]["mailbox"])
    expect(review).to_contain_text(CLIENT["lastName"])
    browser.shot("review", review)
    button(review, CHAT, "action.send").click()
    expect(reviews).to_have_count(0)  # replaced in place by the card with the reference

    found = REFERENCE.search(card_with(page, REFERENCE).inner_text())
    assert found is not None
    reference = found.group(0)
    sent = card_with(page, reference)
    browser.shot("reference", sent)
    # The outbox worker delivers in the background, then edits the card and tells the referrer.
    expect(sent).to_contain_text(text(CHAT, "sent.title"))
    delivered = message(page, text(CHAT, "delivered", reference=reference, recipient=OCMW_NAME))
    expect(delivered).to_be_visible()
    browser.shot("delivered", delivered)
    return reference


def check_the_mail(data_dir: Path, reference: str, unzip_to: Path) -> None:
    [eml] = wait_for_file(data_dir / "outbox", "*.eml")
    raw = eml.read_bytes()
    assert reference.encode() in raw
    # The phone as typed and as stored (+32470123456): "470" alone also turns up in a random MIME boundary.
    for personal in (CLIENT["firstName"], CLIENT["lastName"], CLIENT["street"], "0470 12 34 56", "470123456"):
        assert personal.encode() not in raw, f"{personal!r} is in the mail outside the encrypted ZIP"
    message = email.message_from_bytes(raw, policy=email.policy.default)
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == f"{reference}.zip"
    package = attachment.get_content()
    assert isinstance(package, bytes)

    assert sevenzip.extract(package, "wrong-password", unzip_to / "wrong").returncode != 0
    result = sevenzip.extract(package, ZIP_PASSWORD, unzip_to / "right")
    assert result.returncode == 0, result.stdout + result.stderr
    listing = sevenzip.technical_listing(package, ZIP_PASSWORD)
    assert "AES-256" in listing
    unpacked = "\n".join(path.read_text(encoding="utf-8") for path in sorted((unzip_to / "right").iterdir()))
    for value in CLIENT.values():
        assert value in unpacked
    assert "+32470123456" in unpacked


def link_code(bot_env: dict[str, str]) -> str:
    """`python -m bot link-ocmw <protocol>` prints the code on its last line."""
    result = subprocess.run(
        [sys.executable, "-m", "bot", "link-ocmw", PROTOCOL["id"]],
        cwd=ROOT, env=bot_env, capture_output=True, text=True, timeout=60, check=True,
    )
    return result.stdout.strip().splitlines()[-1].strip()


def post_in_channel_mentioning_the_bot(page: Page, words: str) -> None:
    """A new post in the channel that @mentions the bot (type @, pick the bot, type the rest)."""
    post_button = page.get_by_role("button", name="Post", exact=True)
    composer = page.get_by_role("group").filter(has=post_button).locator(MESSAGE_BOX)
    composer.click()
    composer.press_sequentially("@" + BOT_NAME.split()[0][:4])
    page.get_by_role("menuitem", name=BOT_NAME).click()
    composer.press_sequentially(f" {words}")
    post_button.click()


def test_a_referral_goes_from_the_chat_to_the_mailbox_and_is_acknowledged_in_the_ocmw_channel(
    stack: Stack, browser: Browser, bot_env: dict[str, str], tmp_path: Path
) -> None:
    page = browser.page
    page.goto(stack.url)
    expect(page.locator(MESSAGE_BOX)).to_be_visible()
    browser.shot("playground")

    reference = refer_a_family(browser, first_an_incomplete_phone=True)
    check_the_mail(Path(bot_env["BOT_DATA_DIR"]), reference, tmp_path / "unzipped")

    # The OCMW links its channel with a one-time code, mentioning the bot as Teams requires there.
    code = link_code(bot_env)
    channel = f"{TEAM_NAME} - {CHANNEL_NAME}"
    open_conversation(page, channel)
    post_in_channel_mentioning_the_bot(page, f"koppel {code}")
    linked = message(page, text(CHAT, "link_done", ocmw=OCMW_NAME))
    expect(linked).to_be_visible()
    browser.shot("channel-linked", linked)

    # The referral delivered before the link is posted in the channel as soon as it is linked.
    ocmw_card = card_with(page, text(OCMW, "ocmw.title", reference=reference))
    expect(ocmw_card).to_be_visible()
    expect(ocmw_card).to_contain_text(PROTOCOL["recipient"]["mailbox"])
    assert CLIENT["lastName"] not in ocmw_card.inner_text(), "no client data in the channel"
    browser.shot("ocmw-card", ocmw_card)
    button(ocmw_card, OCMW, "action.acknowledge").click()
    expect(ocmw_card).to_contain_text(pattern(OCMW, "ocmw.acknowledged", name=USER_NAME, anything=("time",)))
    expect(button(ocmw_card, OCMW, "action.acknowledge")).to_have_count(0)
    browser.shot("ocmw-acknowledged", ocmw_card)

    # The referrer hears of it in the personal chat.
    open_conversation(page, PERSONAL_CHAT)
    told = message(page, pattern(CHAT, "ack_to_referrer", reference=reference, recipient=OCMW_NAME,
                                 name=USER_NAME, anything=("time",)))
    expect(told).to_be_visible()
    browser.shot("referrer-told", told)

    # Now that the channel is linked, the next referral's card lands there as soon as it is delivered.
    second = refer_a_family(browser, first_an_incomplete_phone=False)
    assert second != reference
    open_conversation(page, channel)
    second_card = card_with(page, text(OCMW, "ocmw.title", reference=second))
    expect(second_card).to_be_visible()
    expect(button(second_card, OCMW, "action.acknowledge")).to_be_visible()
    browser.shot("ocmw-second-card", second_card)

    telemetry = [url for url in browser.blocked if any(host in url for host in TELEMETRY_HOSTS)]
    assert telemetry == [], "the Playground page tried to send telemetry"


def start_runner(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], OutputReader]:
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.run_with_playground", *args],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    return process, OutputReader(process.stdout)


def stop_runner(process: subprocess.Popen[str], output: OutputReader) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output.close()


def refuses(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex((host, port)) != 0


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - http on this machine
        return str(answer.read().decode("utf-8", "replace"))


def test_make_run_prints_the_playground_address_and_ctrl_c_stops_both(
    bot_env: dict[str, str]
) -> None:
    requirements(browser=False)
    bot_port = free_port()
    process, output = start_runner(bot_env, "--port", str(bot_port), "--playground-port", "0")
    try:
        found = output.wait_for(re.compile(r"open (http://localhost:(\d+))"), timeout=90)
        assert found is not None, "\n".join(output.lines)
        url, playground_port = found.group(1), int(found.group(2))
        assert "Agents Playground" in get(url)
        assert get(f"http://127.0.0.1:{bot_port}/healthz")
        assert refuses("127.0.0.2", playground_port), "the Playground listens on 127.0.0.1 only"
    finally:
        status = stop_runner(process, output)
    assert status == 0, "\n".join(output.lines)
    assert refuses("127.0.0.1", bot_port)
    assert refuses("127.0.0.1", playground_port)


def test_without_node_make_run_says_so_and_starts_the_bot_alone(bot_env: dict[str, str], tmp_path: Path) -> None:
    no_node = tmp_path / "bin-without-node"
    no_node.mkdir()
    bot_port = free_port()
    process, output = start_runner({**bot_env, "PATH": str(no_node)}, "--port", str(bot_port))
    try:
        found = output.wait_for(re.compile(r"Starting the bot alone"), timeout=30)
        assert found is not None, "\n".join(output.lines)
        assert any("Node.js" in line for line in output.lines)
        deadline = time.monotonic() + 60
        while refuses("127.0.0.1", bot_port) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        assert get(f"http://127.0.0.1:{bot_port}/healthz")
    finally:
        status = stop_runner(process, output)
    assert status == 0
