"""Every ```python block of the guides, the landing page and the README runs as written, top to bottom per page.

Each page runs in a fresh interpreter whose working directory looks like the repository root (its top-level
entries are linked into a temporary folder, so files the examples write land there). A block marked
``<!-- no-run: REASON -->`` on the line before its fence is skipped, and must show what it prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .doc_blocks import RUNNER, blocks, runnable

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs" / "guides").glob("*.md"))
PAGES += ["docs/index.md", "README.md"]
# The selector pages run on random tensors; their ids contain "selectors" (`-k selectors` picks them).
PAGES += sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs" / "selectors").glob("*.md"))
# Pages whose examples all run somewhere else (a cluster, a GPU, an lmms-eval install) or that have none.
PAGES_WITH_BLOCKS = [page for page in PAGES if runnable(ROOT / page, page)]


def _page_blocks(page: str):
    return blocks(ROOT / page, page)


def _repo_root_lookalike(folder: Path) -> Path:
    for entry in ROOT.iterdir():
        if not entry.name.startswith(".") or entry.name == ".ci":
            (folder / entry.name).symlink_to(entry)
    return folder


def test_most_guides_have_runnable_examples():
    assert len(PAGES_WITH_BLOCKS) >= len(PAGES) - 5, f"runnable pages: {PAGES_WITH_BLOCKS}"


@pytest.mark.parametrize("page", PAGES_WITH_BLOCKS)
def test_python_blocks_run_in_order(page, tmp_path):
    todo = runnable(ROOT / page, page)
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", TQDM_DISABLE="1", PYTHONHASHSEED="0")
    proc = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(todo), capture_output=True,
                          text=True, cwd=_repo_root_lookalike(tmp_path), env=env, timeout=300)
    assert proc.returncode == 0, f"{page}: a python block failed\n{proc.stderr[-6000:]}\n{proc.stdout[-2000:]}"


@pytest.mark.parametrize("page", PAGES)
def test_skipped_blocks_give_a_reason_and_show_their_output(page):
    """A no-run block that prints is followed by a ```text block with the output a reader would see."""
    found = _page_blocks(page)
    for block, after in zip(found, [*found[1:], None]):
        if block.lang != "python" or not block.no_run:
            continue
        assert len(block.no_run) > 8, f"{block.where}: say why the block is not run"
        if "print(" in block.code:
            assert after is not None and after.lang == "text", \
                f"{block.where}: a no-run block that prints must be followed by a ```text block with its output"


def test_block_parser_reads_markers_and_line_numbers(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# t\n\n```python\nx = 1\n```\n<!-- no-run: needs a GPU -->\n```python\ny\n```\n"
                    "````text\n```\n````\n")
    first, second, third = blocks(page, "p.md")
    assert (first.line, first.end, first.code, first.no_run) == (3, 5, "x = 1\n", None)
    assert (second.line, second.no_run) == (7, "needs a GPU")
    assert (third.lang, third.code) == ("text", "```\n")
    assert [b["expect"] for b in runnable(page, "p.md")] == [None]


def test_runner_compares_the_shown_output_and_names_the_block(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("```python\nprint(1 + 1)\n```\n\n```text\n3\n```\n\n```{note}\nx\n```\n")
    proc = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(runnable(page, "p.md")),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "FAILED: the python block at p.md:1 printed\n2" in proc.stderr
