"""``tokenprune bench``: readable help, numbers on the terminal, files only where the user says, and
published pages only from a clean git checkout."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokenprune.bench import publish
from tokenprune.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_help_speaks_to_users():
    result = runner.invoke(app, ["bench", "--help"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "usage: tokenprune bench" in out
    for leftover in ("``", "issue", "python -m tokenprune.bench"):
        assert leftover not in out
    speed = runner.invoke(app, ["bench", "speed", "--help"])
    assert "--out" in speed.output and "--publish" in speed.output


def test_default_output_is_a_new_folder_outside_the_checkout():
    where = publish.destination(None, publish=False)
    assert where.pages.is_dir() and not where.pages.resolve().is_relative_to(ROOT) and not where.published
    assert where.results == where.pages / "results"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A committed git checkout holding the shipped benchmark reports, standing in for the repository."""
    repo = tmp_path / "repo"
    results = repo / publish.RESULTS_FOLDER
    results.mkdir(parents=True)
    for report in sorted((ROOT / publish.RESULTS_FOLDER).glob("*.json")):
        (results / report.name).write_text(report.read_text())
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "reports")
    monkeypatch.setattr(publish, "CHECKOUT", repo)
    return repo


def test_publish_refuses_a_dirty_tree(checkout):
    (checkout / publish.RESULTS_FOLDER / "prefill-cpu.json").write_text("{}")
    result = runner.invoke(app, ["bench", "page", "--publish", "--results", str(checkout / publish.RESULTS_FOLDER)])
    assert result.exit_code == 2
    assert "1 modified tracked file(s): benchmarks/results/prefill-cpu.json" in result.stderr
    assert not (checkout / publish.PAGES_FOLDER).exists()


def test_publish_from_a_clean_tree_writes_the_pages(checkout):
    result = runner.invoke(app, ["bench", "page", "--publish", "--results", str(checkout / publish.RESULTS_FOLDER)])
    assert result.exit_code == 0, result.output
    assert (checkout / publish.PAGES_FOLDER / "speed.md").is_file()
    assert "published" in result.output


def test_publish_needs_the_package_to_run_from_a_checkout(tmp_path, monkeypatch):
    from tokenprune.bench import machine
    from tokenprune.errors import UnsupportedError

    assert machine.source_checkout() == ROOT  # these tests run from a clone
    installed = tmp_path / "lib" / "site-packages" / "tokenprune" / "bench" / "machine.py"
    monkeypatch.setattr(machine, "__file__", str(installed))
    assert machine.source_checkout() is None and machine.source_revision() is None
    monkeypatch.setattr(publish, "CHECKOUT", None)
    with pytest.raises(UnsupportedError, match="installed package, not a git checkout.*--out DIR"):
        publish.destination(None, publish=True)


def test_page_prints_the_numbers_and_writes_only_to_out(tmp_path):
    before = subprocess.run(["git", "status", "--porcelain", "--", "docs"], cwd=ROOT, capture_output=True,
                            text=True).stdout
    out = tmp_path / "bench"
    result = runner.invoke(app, ["bench", "page", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "FLOPs fraction" in result.output and "prefill ms" in result.output  # the table, not just "wrote"
    assert "fastv" in result.output
    assert (out / "speed.md").is_file() and (out / "prefill.md").is_file()
    after = subprocess.run(["git", "status", "--porcelain", "--", "docs"], cwd=ROOT, capture_output=True,
                           text=True).stdout
    assert after == before  # the tracked pages are untouched
