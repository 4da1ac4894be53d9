"""report.md and report.html from one list of blocks, so the two always say the same.

The HTML page is self-contained: figures are embedded as PNG data URIs, styles are inline,
and links point to files that exist next to it (SVG versions, run folders), so it opens from
disk without a server.
"""
from __future__ import annotations

import base64
import html
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Union


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    links: dict[tuple[int, int], str] = None  # (row, column) -> relative link target


@dataclass
class Figure:
    name: str  # PNG and SVG files <name>.png / <name>.svg next to the page
    caption: str


Block = Union[Heading, Paragraph, Table, Figure]


def markdown(blocks: list[Block]) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Table):
            parts.append(_markdown_table(block))
        else:
            parts.append(f"![{block.caption}]({block.name}.png)\n\n*{block.caption}* "
                         f"([SVG]({block.name}.svg))")
    return "\n\n".join(parts) + "\n"


def _markdown_table(table: Table) -> str:
    def cell(r: int, c: int, text: str) -> str:
        text = text.replace("|", "\\|")
        link = (table.links or {}).get((r, c))
        return f"[{text}]({link})" if link else text
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(cell(r, c, t) for c, t in enumerate(row)) + " |"
              for r, row in enumerate(table.rows)]
    return "\n".join(lines)


STYLE = ("body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;"
         "color:#222}table{border-collapse:collapse;font-size:.85rem;margin:1rem 0}"
         "td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}"
         "th{background:#f3f3f3}img{max-width:100%}figcaption{font-size:.85rem;color:#555}")


def html_page(blocks: list[Block], title: str, folder: Path) -> str:
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Table):
            body.append(_html_table(block))
        else:
            data = base64.b64encode((folder / f"{block.name}.png").read_bytes()).decode()
            svg = _href(f"{block.name}.svg")
            body.append(f'<figure><img alt="{html.escape(block.caption)}" '
                        f'src="data:image/png;base64,{data}"><figcaption>'
                        f'{html.escape(block.caption)} (<a href="{svg}">SVG</a>)'
                        "</figcaption></figure>")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _href(path: str) -> str:
    """A relative file path as an attribute value: URL-quoted (so '#', '?' or a space in a
    name stay part of the path), then HTML-escaped (so a quote cannot end the attribute)."""
    return html.escape(urllib.parse.quote(path), quote=True)


def _inline(text: str) -> str:
    """Markdown's `code` spans as <code>; everything else escaped."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    rows = []
    for r, row in enumerate(table.rows):
        cells = []
        for c, text in enumerate(row):
            link = (table.links or {}).get((r, c))
            content = html.escape(text)
            cells.append(f'<td><a href="{_href(link)}">{content}</a></td>' if link
                         else f"<td>{content}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
