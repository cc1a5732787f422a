"""``tokenprune search --selectors``: names checked before any model loads, the winner printed and saved."""

from __future__ import annotations

from typer.testing import CliRunner

from tokenprune.cli import app
from tokenprune.search import SearchResult

runner = CliRunner()


def test_unknown_selector_is_refused_before_the_model_loads(monkeypatch):
    import tokenprune.cli_search as cli_search

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the selectors were checked")

    monkeypatch.setattr(cli_search, "load_model", no_loading)
    result = runner.invoke(app, ["search", "llava", "--method", "p-sigmoid", "--budget", "0.5",
                                 "--selectors", "dart,divprun"])
    assert result.exit_code == 2, result.output
    assert "unknown scorer 'divprun' (at tokenprune search --selectors)" in result.output
    assert "did you mean ['divprune'" in result.output
    vtw = runner.invoke(app, ["search", "llava", "--method", "vtw", "--selectors", "dart,random-keep"])
    assert vtw.exit_code == 2 and "VTW, which withdraws every vision token" in vtw.output


def test_search_over_selectors_prints_and_saves_the_winner(tmp_path):
    out = tmp_path / "result.yaml"
    result = runner.invoke(app, ["search", "llava", "--method", "p-sigmoid", "--budget", "0.5", "--n-trials", "3",
                                 "--calibration", "random:2", "--selectors", "last-token-attention,dart",
                                 "--selectors", "random-keep", "-o", str(out)])
    assert result.exit_code == 0, result.output
    saved = SearchResult.load(out)
    assert saved.settings["selectors"] == ["last-token-attention", "dart", "random-keep"]
    assert saved.selector in saved.selector_results
    assert (f"selector: {saved.selector} (chosen from last-token-attention, dart, random-keep; compile with "
            f"scorer='{saved.selector}')") in result.output
    assert f"selector {saved.selector} won" in result.output
