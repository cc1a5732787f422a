"""Layout checks on built HTML and on Markdown tables: tables narrow enough, and wrapping, to fit 1280 px."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

# Columns a table may have on these pages (short cells, wrapping); 8 or more were cut off at 1280 px, where
# furo's content column is about 46em wide.
MAX_COLUMNS = 7
STYLESHEET = "_static/tokenprune.css"


class _Tables(HTMLParser):
    """Column count (cells of the first row) of every table in a page, and the stylesheets it links."""

    def __init__(self):
        super().__init__()
        self.columns: list[int] = []
        self.stylesheets: list[str] = []
        self._depth = 0
        self._first_row: int | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "link" and attrs.get("rel") == "stylesheet":
            self.stylesheets.append(attrs.get("href", ""))
        elif tag == "table":
            self._depth += 1
            self.columns.append(0)
            self._first_row = None
        elif tag == "tr" and self._depth and self._first_row is None:
            self._first_row = len(self.columns) - 1
        elif tag in ("th", "td") and self._first_row is not None and self._first_row == len(self.columns) - 1:
            self.columns[-1] += int(attrs.get("colspan") or 1)

    def handle_endtag(self, tag):
        if tag == "tr" and self._first_row is not None:
            self._first_row = -1  # later rows are not counted
        elif tag == "table":
            self._depth -= 1


def html_problems(page: Path) -> list[str]:
    """What would not fit at 1280 px: tables over MAX_COLUMNS, or the wrapping stylesheet not linked."""
    parser = _Tables()
    parser.feed(page.read_text())
    problems = [f"{page.name}: table {i + 1} has {n} columns (at most {MAX_COLUMNS} fit at 1280 px)"
                for i, n in enumerate(parser.columns) if n > MAX_COLUMNS]
    if not any(href.split("?")[0].endswith(STYLESHEET) for href in parser.stylesheets):
        problems.append(f"{page.name}: does not link {STYLESHEET} (tables would not wrap)")
    return problems


def markdown_table_widths(text: str) -> list[int]:
    """Column count of every pipe table in Markdown ``text``."""
    widths, previous = [], ""
    for line in text.splitlines():
        if re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", line.strip()) and previous.startswith("|"):
            widths.append(line.strip().count("|") - 1)
        previous = line.strip()
    return widths


def stylesheet_wraps(css: str) -> bool:
    """The stylesheet lets table cells, and code inside them, wrap."""
    cells = re.search(r"table\.docutils td\s*\{[^}]*white-space:\s*normal", css.replace(",\n", ", "))
    code = re.search(r"table\.docutils code\.literal\s*\{[^}]*white-space:\s*normal", css)
    return bool(cells and code)
