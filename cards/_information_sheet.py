"""The family's information sheet: one printable A4 page in Dutch, from the consent card's own texts.

The sheet repeats, word for word, what the worker read from the consent card (the `consent.` texts
of the catalogue, so one version id covers both), with both DPOs' addresses, the complaint route and
the protocol. It is a static page: no script, no image, no font or style sheet from elsewhere; the
one inline style block is allowed by its hash (`SHEET_CONTENT_SECURITY_POLICY`), nothing else loads.
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Final

from cards._consent_version import consent_text_version
from cards._texts import Language, text
from cards._views import ProtocolFacts

#: The sheet is for families in Flanders; the card in English links the same Dutch page.
SHEET_LANGUAGE: Final[Language] = "nl"
_DATE_FORMAT = "%d/%m/%Y"
# Sized for one A4 page: 10 pt text, 12 mm margins (tests/infra prints it and counts the pages).
_STYLE: Final = """
@page { size: A4; margin: 12mm 15mm; }
html { color: #000; background: #fff; }
body { font-family: "Segoe UI", Arial, "Liberation Sans", "DejaVu Sans", sans-serif; font-size: 10pt;
       line-height: 1.3; max-width: 46em; margin: 1.5em auto; padding: 0 1em; }
@media print { body { max-width: none; margin: 0; padding: 0; } }
h1 { font-size: 14pt; line-height: 1.2; margin: 0 0 .4em; }
h2 { font-size: 11pt; margin: .7em 0 .1em; break-after: avoid; }
p { margin: 0 0 .35em; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0 1em; margin: .15em 0 .35em; }
dt { font-weight: bold; }
dd { margin: 0; }
a { color: inherit; }
footer { margin-top: .9em; border-top: 1px solid #888; padding-top: .3em; font-size: 8.5pt; }
"""
_STYLE_HASH: Final = base64.b64encode(hashlib.sha256(_STYLE.encode("utf-8")).digest()).decode("ascii")
#: The page may show its own inline style and nothing else: no script, image, font, frame or form.
SHEET_CONTENT_SECURITY_POLICY: Final = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_LINK_MARK = "\x00url\x00"  # cannot occur in a catalogue text or a URL a protocol file allows


def information_sheet_html(facts: ProtocolFacts, *, online_url: str = "") -> str:
    """The printable sheet for the protocol `facts`; `online_url` is its own public address, if known."""

    def say(key: str, **params: str) -> str:
        return html.escape(text(SHEET_LANGUAGE, key, **params))

    def paragraph(key: str, **params: str) -> str:
        return f"<p>{say(key, **params)}</p>"

    def heading(key: str) -> str:
        return f"<h2>{say(key)}</h2>"

    dpos = list(dict.fromkeys([(facts.sender, facts.sender_dpo), (facts.recipient, facts.recipient_dpo)]))
    dpo_list = "".join(
        f"<dt>{say('consent.rights.dpo', organisation=organisation)}</dt>"
        f'<dd><a href="mailto:{html.escape(address)}">{html.escape(address)}</a></dd>'
        for organisation, address in dpos
    )
    protocol = say("consent.sheet.protocol", recipient=facts.recipient, title=facts.title, id=facts.id,
                   date=facts.in_force_from.strftime(_DATE_FORMAT))
    if facts.published_at:
        published = _with_link("consent.sheet.published_at", facts.published_at)
    else:
        published = say("consent.sheet.published_by_parties", sender=facts.sender, recipient=facts.recipient)
    footer = [say("consent.version_label", version=consent_text_version()), html.escape(facts.id)]
    if online_url:
        footer.append(_with_link("consent.sheet.online", online_url))
    body = "\n".join(
        [
            f"<h1>{say('consent.sheet.title', ocmw=facts.recipient)}</h1>",
            paragraph("consent.sheet.intro", team=facts.sender_team),
            heading("consent.data.heading"),
            paragraph("consent.data.text"),
            heading("consent.recipient.heading"),
            paragraph("consent.recipient.text_one", ocmw=facts.recipient),
            paragraph("consent.recipient.network"),
            heading("consent.purpose.heading"),
            paragraph("consent.purpose.text"),
            heading("consent.follow_up.heading"),
            paragraph("consent.follow_up.text"),
            heading("consent.rights.heading"),
            paragraph("consent.rights.text"),
            f"<dl>{dpo_list}</dl>",
            paragraph("consent.complaint.text"),
            heading("consent.consent.heading"),
            paragraph("consent.consent.text"),
            heading("consent.sheet.protocol_heading"),
            f"<p>{protocol} {published}</p>",
        ]
    )
    return _page(say("consent.sheet.page_title", ocmw=facts.recipient), f"<main>\n{body}\n</main>\n"
                 f"<footer>{' · '.join(footer)}</footer>")


def information_sheet_not_found_html() -> str:
    """The page for an address that names no protocol the bot knows (it never repeats the address)."""
    title = html.escape(text(SHEET_LANGUAGE, "consent.sheet.not_found.title"))
    return _page(title, f"<main>\n<h1>{title}</h1>\n"
                        f"<p>{html.escape(text(SHEET_LANGUAGE, 'consent.sheet.not_found.text'))}</p>\n</main>")


def _with_link(key: str, url: str) -> str:
    """The text `key` escaped, with its `{url}` as a link (for the screen; the address itself prints)."""
    escaped = html.escape(url)
    return html.escape(text(SHEET_LANGUAGE, key, url=_LINK_MARK)).replace(
        html.escape(_LINK_MARK), f'<a href="{escaped}">{escaped}</a>'
    )


def _page(title: str, content: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="nl-BE">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n{content}\n</body>\n</html>\n"
    )
