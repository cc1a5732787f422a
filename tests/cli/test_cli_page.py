"""The generated CLI reference: option names are inline code, so Sphinx cannot turn ``--`` into an en dash."""

from __future__ import annotations

import re
from pathlib import Path

DOCS_EXT = Path(__file__).resolve().parents[2] / "docs" / "_ext"


def _page(monkeypatch) -> str:
    monkeypatch.syspath_prepend(str(DOCS_EXT))
    from tokenprune_docs import clipage

    written = {}
    monkeypatch.setattr(clipage, "write_page", lambda name, body: written.setdefault(name, body))
    clipage.generate_cli_page()
    return written["cli.md"]


def _outside_code(markdown: str) -> str:
    """The page without fenced blocks and inline code spans."""
    prose = re.sub(r"```.*?```", "", markdown, flags=re.S)
    return re.sub(r"`[^`]*`", "", prose)


def test_no_option_name_is_left_as_prose(monkeypatch):
    page = _page(monkeypatch)
    assert "`--schedule`" in page and "`--trust-remote-code`" in page
    stray = re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", _outside_code(page))
    assert stray == [], stray


def test_bench_options_are_documented(monkeypatch):
    page = _page(monkeypatch)
    assert "usage: tokenprune bench speed" in page and "--publish" in page
