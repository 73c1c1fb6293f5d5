"""Draw the two Teams app icons from code: `color.png` (192x192) and `outline.png` (32x32).

The symbol is a house with an arrow going in: a family referred to the help at home.
Teams wants the colour icon on a full, opaque background and the outline icon white on
transparent (only alpha varies). Both are drawn 8 times larger and scaled down, for smooth edges.

    python infra/teams/make_icons.py        # rewrites both PNGs next to this file
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
COLOR_FILE = HERE / "color.png"
OUTLINE_FILE = HERE / "outline.png"
COLOR_SIZE = 192
OUTLINE_SIZE = 32
#: Also the manifest's `accentColor`.
ACCENT = (0x1B, 0x6E, 0x8A)
WHITE = (255, 255, 255)
SCALE = 8

Point = tuple[float, float]


def _house(box: float, left: float, top: float) -> list[Point]:
    """The house outline (roof and walls) as one polygon, in a `box`-sized square at (left, top)."""
    shape = [(0.50, 0.10), (0.92, 0.48), (0.80, 0.48), (0.80, 0.90), (0.20, 0.90), (0.20, 0.48), (0.08, 0.48)]
    return [(left + x * box, top + y * box) for x, y in shape]


def _arrow(box: float, left: float, top: float) -> list[Point]:
    """A right-pointing arrow, as one polygon, in the lower half of the house."""
    shape = [
        (0.30, 0.62), (0.52, 0.62), (0.52, 0.53), (0.70, 0.69),
        (0.52, 0.85), (0.52, 0.76), (0.30, 0.76),
    ]  # fmt: skip
    return [(left + x * box, top + y * box) for x, y in shape]


def color_icon() -> Image.Image:
    """192x192, opaque: a white house on the accent colour, the arrow in the accent colour."""
    size = COLOR_SIZE * SCALE
    image = Image.new("RGBA", (size, size), (*ACCENT, 255))
    draw = ImageDraw.Draw(image)
    box = size * 0.64
    offset = (size - box) / 2
    draw.polygon(_house(box, offset, offset - size * 0.02), fill=(*WHITE, 255))
    draw.polygon(_arrow(box, offset, offset - size * 0.02), fill=(*ACCENT, 255))
    return image.resize((COLOR_SIZE, COLOR_SIZE), Image.Resampling.LANCZOS)


def outline_icon() -> Image.Image:
    """32x32, white on transparent: the house as a line, the arrow filled."""
    size = OUTLINE_SIZE * SCALE
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    box = size * 0.94
    offset = (size - box) / 2
    house = _house(box, offset, offset)
    draw.polygon(house, outline=255, width=round(2 * SCALE))
    draw.polygon(_arrow(box, offset, offset), fill=255)
    alpha = mask.resize((OUTLINE_SIZE, OUTLINE_SIZE), Image.Resampling.LANCZOS)
    icon = Image.new("RGBA", (OUTLINE_SIZE, OUTLINE_SIZE), (*WHITE, 0))
    icon.putalpha(alpha)
    return icon


def write_icons(folder: Path = HERE) -> list[Path]:
    """Write both icons into `folder` and return their paths."""
    written = []
    for name, image in (("color.png", color_icon().convert("RGB")), ("outline.png", outline_icon())):
        path = folder / name
        image.save(path, format="PNG", optimize=True)
        written.append(path)
    return written


def main() -> int:
    for path in write_icons():
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
