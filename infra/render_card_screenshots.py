"""Write the card screenshots the user guides show: `docs/img/cards/<card>.<nl|en>.png`.

    python -m infra.render_card_screenshots            # or: make card-screenshots

Renders the guide samples of `infra/card_gallery.py` with Microsoft's Adaptive Cards renderer in
headless Chromium (see `infra/card_renderer.py`: needs `chromium` and `npm ci`), exactly as the
tests do, and removes PNGs in that folder that no sample makes any more. Fails on any renderer warning.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cards
from infra.card_gallery import samples
from infra.card_renderer import CardRenderer, RendererUnavailable

DOCS_DIR = Path(__file__).resolve().parent.parent / "docs" / "img" / "cards"


def write_screenshots(folder: Path = DOCS_DIR) -> list[Path]:
    """Render every guide sample in every language into `folder`; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = [(sample, lang) for sample in samples() if sample.in_docs for lang in cards.LANGUAGES]
    written = []
    with CardRenderer() as renderer:
        for sample, lang in wanted:
            result, png = renderer.screenshot(sample.card(lang))
            if not result.rendered or result.problems:
                raise RuntimeError(f"{sample.name} ({lang}) did not render cleanly: {result.problems}")
            path = folder / sample.file_name(lang)
            path.write_bytes(png)
            written.append(path)
        if renderer.blocked_requests:
            raise RuntimeError(f"the page tried to fetch remote files: {renderer.blocked_requests}")
    for stale in set(folder.glob("*.png")) - set(written):
        stale.unlink()
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=DOCS_DIR, help=f"default: {DOCS_DIR}")
    arguments = parser.parse_args(argv)
    try:
        written = write_screenshots(arguments.output)
    except RendererUnavailable as error:
        sys.stderr.write(f"{error}\n")
        return 2
    total = sum(path.stat().st_size for path in written)
    sys.stdout.write(f"wrote {len(written)} screenshots ({total // 1024} KiB) to {arguments.output}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
