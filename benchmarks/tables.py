"""A table as aligned text for the terminal, or as Markdown for the README."""

from __future__ import annotations


def render(header: list[str], rows: list[list[str]], *, markdown: bool) -> str:
    """Columns left-aligned and padded (text), or a Markdown table (`|` in a cell escaped)."""
    if markdown:
        def line(cells: list[str]) -> str:
            return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
        return "\n".join([line(header), "| " + " | ".join("---" for _ in header) + " |", *map(line, rows)])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
