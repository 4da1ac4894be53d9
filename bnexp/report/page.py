"""report.md and report.html from one list of blocks, so the two always say the same.

The HTML page is self-contained and reads on a narrow screen: a viewport tag, a table of
contents whose links reach every section and figure, tables that scroll sideways inside the page
instead of widening it, figures embedded as PNG data URIs (each opens its SVG, full size, when
clicked), inline styles, and links only to files written next to it. It makes no network
request and opens from disk without a server.
"""
from __future__ import annotations

import base64
import html
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union


@dataclass
class Heading:
    text: str
    level: int = 2

    @property
    def anchor(self) -> str:
        return slug(self.text)


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    links: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, col) -> file


@dataclass
class Figure:
    name: str  # PNG and SVG files <name>.png / <name>.svg next to the page
    title: str  # a few words: the contents entry
    caption: str  # what it shows and how to read it
    alt: str  # the figure described for a reader who cannot see it
    number: int = 0  # set by `number_figures`

    @property
    def anchor(self) -> str:
        return f"figure-{self.number}"


@dataclass
class Details:
    summary: str  # shown folded
    text: str  # shown when unfolded


@dataclass
class Contents:
    """The table of contents: filled from the headings and figures that follow it."""


Block = Union[Heading, Paragraph, Table, Figure, Details, Contents]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def number_figures(blocks: list[Block]) -> list[Block]:
    for number, block in enumerate((b for b in blocks if isinstance(b, Figure)), start=1):
        block.number = number
    return blocks


def _entries(blocks: list[Block]) -> list[tuple[int, str, str]]:
    """(indent, text, anchor) of every heading below the title and every figure."""
    entries = []
    for block in blocks:
        if isinstance(block, Heading) and block.level > 1:
            entries.append((block.level - 2, block.text, block.anchor))
        elif isinstance(block, Figure):
            entries.append((1, f"Figure {block.number}: {block.title}", block.anchor))
    return entries


def markdown(blocks: list[Block]) -> str:
    blocks = number_figures(blocks)
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Table):
            parts.append(_markdown_table(block))
        elif isinstance(block, Details):
            parts.append(f"{block.summary}: {block.text}")
        elif isinstance(block, Contents):
            parts.append("\n".join(f"{'  ' * indent}- [{text}](#{anchor})"
                                   for indent, text, anchor in _entries(blocks)))
        else:
            parts.append(f'<a id="{block.anchor}"></a>\n\n![{block.alt}]({block.name}.png)\n\n'
                         f"*Figure {block.number}. {block.title}.* {block.caption} "
                         f"([SVG]({block.name}.svg))")
    return "\n\n".join(parts) + "\n"


def _markdown_table(table: Table) -> str:
    def cell(r: int, c: int, text: str) -> str:
        text = text.replace("|", "\\|")
        link = table.links.get((r, c))
        return f"[{text}]({link})" if link else text
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in table.header) + " |",
             "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(cell(r, c, t) for c, t in enumerate(row)) + " |"
              for r, row in enumerate(table.rows)]
    return "\n".join(lines)


STYLE = ("body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;"
         "color:#222;line-height:1.45}.scroll{overflow-x:auto;max-width:100%}"
         "table{border-collapse:collapse;font-size:.85rem;margin:1rem 0}"
         "td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}"
         "th{background:#f3f3f3}figure{margin:1.5rem 0}img{max-width:100%;height:auto;"
         "cursor:zoom-in}figcaption{font-size:.85rem;color:#444}code{overflow-wrap:anywhere}"
         "nav ul{margin:.25rem 0}p,li,figcaption{overflow-wrap:anywhere}"
         ".verdict{font-weight:600}")


def html_page(blocks: list[Block], title: str, folder: Path) -> str:
    blocks = number_figures(blocks)
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f'<h{block.level} id="{block.anchor}">{html.escape(block.text)}'
                        f"</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Table):
            body.append(f'<div class="scroll">{_html_table(block)}</div>')
        elif isinstance(block, Details):
            body.append(f"<details><summary>{_inline(block.summary)}</summary>"
                        f"<p>{_inline(block.text)}</p></details>")
        elif isinstance(block, Contents):
            body.append(_html_contents(_entries(blocks)))
        else:
            data = base64.b64encode((folder / f"{block.name}.png").read_bytes()).decode()
            svg = _href(f"{block.name}.svg")
            body.append(f'<figure id="{block.anchor}"><a href="{svg}" title="open full size">'
                        f'<img alt="{html.escape(block.alt)}" '
                        f'src="data:image/png;base64,{data}"></a><figcaption><strong>Figure '
                        f"{block.number}. {html.escape(block.title)}.</strong> "
                        f"{_inline(block.caption)} "
                        f'(<a href="{svg}">SVG</a>)</figcaption></figure>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _html_contents(entries: list[tuple[int, str, str]]) -> str:
    items, depth = [], 0
    for indent, text, anchor in entries:
        while depth < indent:
            items.append("<ul>")
            depth += 1
        while depth > indent:
            items.append("</ul>")
            depth -= 1
        items.append(f'<li><a href="#{anchor}">{html.escape(text)}</a></li>')
    items += ["</ul>"] * depth
    return f'<nav aria-label="contents"><ul>{"".join(items)}</ul></nav>'


def _href(path: str) -> str:
    """A relative file path as an attribute value: URL-quoted (so '#', '?' or a space in a
    name stay part of the path), then HTML-escaped (so a quote cannot end the attribute)."""
    return html.escape(urllib.parse.quote(path), quote=True)


def _inline(text: str) -> str:
    """Markdown's `code` spans as <code> and **bold** as <strong>; everything else escaped."""
    pieces = html.escape(text).split("`")
    out = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    rows = []
    for r, row in enumerate(table.rows):
        cells = []
        for c, text in enumerate(row):
            link: Optional[str] = table.links.get((r, c))
            content = html.escape(text)
            cells.append(f'<td><a href="{_href(link)}">{content}</a></td>' if link
                         else f"<td>{content}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
