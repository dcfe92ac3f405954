"""The model cards' Markdown as HTML for the MLOps page: the few constructs `mlops.lineage.card` writes.

Headings, paragraphs, bullet lists, pipe tables, `code`, *emphasis* and **strong**. Every
character of the text is escaped before any tag is added, so a card (which holds values
from configs and run tags) can never put markup of its own on the page.
"""

from __future__ import annotations

import html
import re

_CODE = re.compile(r"`([^`]+)`")
_STRONG = re.compile(r"\*\*([^*]+)\*\*")
_EMPHASIS = re.compile(r"\*([^*]+)\*")


def _inline(text: str) -> str:
    escaped = html.escape(text, quote=True)
    escaped = _CODE.sub(r"<code>\1</code>", escaped)
    escaped = _STRONG.sub(r"<strong>\1</strong>", escaped)
    return _EMPHASIS.sub(r"<em>\1</em>", escaped)


def _cells(line: str) -> list[str]:
    inner = line.strip().removeprefix("|").removesuffix("|")
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", inner)]


def _table(lines: list[str]) -> str:
    header, *rows = [_cells(line) for line in lines if not re.fullmatch(r"\|[\s|:-]+\|", line.strip())]
    head = "".join(f"<th>{_inline(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _block(lines: list[str]) -> str:
    first = lines[0]
    if heading := re.match(r"(#{1,6}) (.*)", first):
        level = min(len(heading[1]) + 2, 6)  # the page's own h2/h3 stay above the card's
        return f"<h{level}>{_inline(heading[2])}</h{level}>" + (_block(lines[1:]) if lines[1:] else "")
    if first.startswith("|"):
        return _table(lines)
    if first.startswith("- "):
        items = "".join(f"<li>{_inline(line[2:])}</li>" for line in lines if line.startswith("- "))
        return f"<ul>{items}</ul>"
    return f"<p>{_inline(' '.join(lines))}</p>"


def markdown_html(text: str) -> str:
    """The HTML of a card's Markdown; blocks are separated by blank lines."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current = []
        elif line.startswith("#") and current:
            blocks.append(current)
            current = [line]
        else:
            current.append(line)
    if current:
        blocks.append(current)
    return "\n".join(_block(block) for block in blocks)
