"""The generated tables stay narrow enough, and wrap, to be read at 1280 px (the built pages are checked in
tests/docs/test_docs.py after the full build)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

from .layout import MAX_COLUMNS, html_problems, markdown_table_widths, stylesheet_wraps

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def test_stylesheet_wraps_table_cells_and_is_linked():
    assert stylesheet_wraps((DOCS / "_static" / "tokenprune.css").read_text())
    conf = (DOCS / "conf.py").read_text()
    assert 'html_css_files = ["tokenprune.css"]' in conf and 'html_static_path = ["_static"]' in conf


def test_quality_page_tables_fit():
    from tokenprune.bench.quality.page import render_page

    report = json.loads((DOCS / "benchmarks" / "quality.json").read_text())
    page = render_page(report, "intro")
    widths = markdown_table_widths(page)
    assert len(widths) >= 6 and max(widths) <= MAX_COLUMNS, widths
    assert "### Accuracy per question type" in page and "### Schedules" in page
    for row in report["rows"]:  # nothing dropped: every scored entry keeps its schedule on the page
        if row["schedule"]:
            assert " ".join(f"{k:.2f}" for k in row["schedule"]["keep_ratio"]) in page
    assert (DOCS / "benchmarks" / "quality.md").read_text() == page.replace("intro", _intro(), 1)


def _intro() -> str:
    text = (DOCS / "benchmarks" / "quality.md").read_text()
    from tokenprune.bench.quality.page import NOTE_PREFIX

    intro = text.split("accuracy vs FLOPs\n\n", 1)[1].split("\n\n## Targets", 1)[0]
    return intro.split(f"\n\n{NOTE_PREFIX}", 1)[0]  # the run's note is rendered from quality.json


def _support_module():
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from tokenprune_docs import support
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    return support


def test_support_table_puts_the_status_first_and_fits(monkeypatch, tmp_path):
    support = _support_module()
    written = {}
    monkeypatch.setattr(support, "write_page", lambda name, body: written.setdefault(name, body))
    monkeypatch.setattr(support, "write_text", lambda path, body: written.setdefault(path.name, body))
    monkeypatch.setattr(support, "suite_results", lambda: None)
    monkeypatch.setattr(support, "_other_architectures", lambda outcomes: ("", 3))
    passed, failed = SimpleNamespace(passed=True), SimpleNamespace(passed=False)
    outcomes = [SimpleNamespace(name="a", architectures=["AForConditionalGeneration"], text_models=["llama"],
                                token_refs=["image_token_id"], checks={"default": passed}),
                SimpleNamespace(name="b", architectures=["B1", "B2"], text_models=[], token_refs=[],
                                checks={"default": passed, "sliding": failed})]
    support.generate_support_table(outcomes)
    page = written["models.md"]
    assert max(markdown_table_widths(page)) <= 3
    assert "| mini check | spec |" in page and "| pass | [`a`](specs/a.md) |" in page
    assert "| sliding: **FAIL** | [`b`](specs/b.md) | `B1`, `B2` (—) |" in page
    assert written["support-count.md"].startswith("**2** model families have a bundled spec (1 pass")
    assert "the 3 other image-text architectures" in written["support-count.md"]


def test_html_check_finds_wide_tables_and_a_missing_stylesheet(tmp_path):
    wide = "<tr>" + "<th>x</th>" * (MAX_COLUMNS + 1) + "</tr>"
    page = tmp_path / "p.html"
    page.write_text(f"<html><head></head><body><table><thead>{wide}</thead><tbody>{wide}</tbody></table>"
                    "<table><tr><td colspan='2'>a</td></tr><tr><td>1</td><td>2</td><td>3</td></tr></table>")
    assert html_problems(page) == [f"p.html: table 1 has {MAX_COLUMNS + 1} columns (at most {MAX_COLUMNS} fit at "
                                   "1280 px)", "p.html: does not link _static/tokenprune.css (tables would not wrap)"]
    page.write_text('<link rel="stylesheet" href="../_static/tokenprune.css?v=1"><table><tr><td>1</td></tr></table>')
    assert html_problems(page) == []
