"""Commands the README tells a new user to run work as written."""

from __future__ import annotations

from pathlib import Path

import tokenprune.support as support

ROOT = Path(__file__).resolve().parents[2]


def test_support_table_prints_without_arguments(monkeypatch, capsys):
    assert "`python -m tokenprune.support`" in (ROOT / "README.md").read_text()
    row = support.SupportRow("LlavaForConditionalGeneration", "llava", "supported", "llava", "model.language_model",
                             "tests/conformance")
    monkeypatch.setattr(support, "support_rows", lambda: [row])  # the real analysis takes ~20 s
    support.main([])
    assert capsys.readouterr().out == support.render_markdown([row])


def test_support_table_still_writes_files(monkeypatch, tmp_path, capsys):
    row = support.SupportRow("X", "x", "unsupported", None, None, "no decoder stack")
    monkeypatch.setattr(support, "support_rows", lambda: [row])
    support.main(["--out", str(tmp_path / "t.md"), "--json", str(tmp_path / "t.json")])
    assert (tmp_path / "t.md").read_text() == support.render_markdown([row]) and capsys.readouterr().out == ""
    assert '"reason": "no decoder stack"' in (tmp_path / "t.json").read_text()
