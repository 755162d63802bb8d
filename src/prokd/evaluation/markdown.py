"""Markdown for reports and study summaries: one table writer, one mean ± std cell, and
pages built of blocks (rendered here as markdown; ``report.py`` renders them as HTML too)."""

from __future__ import annotations

from pathlib import Path

Block = tuple  # ("h1"|"h2"|"p"|"pre", text) | ("table", header, rows) | ("img", path, caption)


def plus_minus(cell: dict[str, float] | None, digits: int = 3) -> str:
    """``mean ± std`` of a ``{"mean", "std"}`` cell ("" for none)."""
    return "" if cell is None else f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(blocks: list[Block], base: Path) -> str:
    """The blocks as markdown; image paths relative to ``base``."""
    out = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            out.append(f"# {block[1]}")
        elif kind == "h2":
            out.append(f"## {block[1]}")
        elif kind == "p":
            out.append(block[1])
        elif kind == "pre":
            out.append(block[1])
        elif kind == "table":
            out.append(markdown_table(block[1], block[2]))
        elif kind == "img":
            out.append(
                f"![{block[2]}]({Path(block[1]).relative_to(base).as_posix()})\n\n{block[2]}"
            )
    return "\n\n".join(out) + "\n"
