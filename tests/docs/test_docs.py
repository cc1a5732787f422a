"""The docs build offline with warnings as errors, every generated page is produced, and the quickstart runs."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .layout import html_problems

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


@pytest.mark.slow
def test_docs_build_with_warnings_as_errors(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    pytest.importorskip("furo")
    out = tmp_path / "html"
    start = time.perf_counter()
    # `tokenprune docs` runs `python -m sphinx -W --keep-going -b html docs OUT`, the command CI documents.
    proc = subprocess.run([sys.executable, "-m", "tokenprune", "docs", "--out", str(out)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "-W --keep-going -b html" in proc.stdout
    import tokenprune as tp
    from tokenprune.spec_testdata import load_test_model

    for page in ["index", "guides/quickstart", "generated/models", "generated/gallery", "generated/spec-schema",
                 "generated/cli", "reference/api", "reference/schedules", "reference/spec-format"]:
        assert (out / f"{page}.html").is_file(), page
    for name in tp.bundled_spec_names():
        assert (out / "generated" / "specs" / f"{name}.html").is_file(), name
        page = (DOCS / "generated" / "specs" / f"{name}.md").read_text()
        if "does not load" in page or "page generator failed" in page:
            continue  # a broken spec is shown as broken (its conformance tests fail); the build goes on
        if load_test_model(name, required=False) is not None:
            assert (DOCS / "generated" / "img" / f"graph_{name}.png").is_file(), name
    models = (out / "generated" / "models.html").read_text()
    assert all(name in models for name in tp.bundled_spec_names())
    cli = (out / "generated" / "cli.html").read_text()
    assert all(f"tokenprune {c}" in cli for c in ("inspect", "validate", "visualize", "search", "bench", "docs"))
    api = (out / "reference" / "api.html").read_text()
    assert "tokenprune.compile" in api and "tokenprune.save_pruned" in api
    assert (DOCS / "generated" / "img" / "kept_patches.png").is_file()
    # Tables readable at 1280 px: few enough columns, and the wrapping stylesheet on every page.
    pages = [out / "index.html", out / "generated" / "models.html", out / "benchmarks" / "quality.html",
             *sorted((out / "generated" / "specs").glob("*.html"))]
    problems = [p for page in pages for p in html_problems(page)]
    assert not problems, "\n".join(problems)
    assert "model families have a bundled spec" in (out / "index.html").read_text()
    print(f"docs built in {seconds:.1f}s")


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def test_quickstart_first_example_runs():
    block = _python_blocks(DOCS / "guides" / "quickstart.md")[0]
    namespace: dict = {}
    exec(compile(block, "quickstart.md", "exec"), namespace)  # noqa: S102 - our own docs
    assert namespace["logits"].shape[1] < namespace["batch"].input_ids.shape[1]


def test_schedule_semantics_examples_hold():
    import tokenprune as tp

    text = (DOCS / "reference" / "schedules.md").read_text()
    assert ">>> tp.keep_count(0.07, 100), tp.keep_count(0.5, 575), tp.keep_count(0.0, 576)\n(7, 288, 0)" in text
    assert (tp.keep_count(0.07, 100), tp.keep_count(0.5, 575), tp.keep_count(0.0, 576)) == (7, 288, 0)


def test_missing_optional_pages_are_dropped_from_toctrees(tmp_path, monkeypatch):
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import tokenprune_docs
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    monkeypatch.setattr(tokenprune_docs, "DOCS", tmp_path)
    monkeypatch.setattr(tokenprune_docs, "OPTIONAL_GLOBS", {"benchmarks/*": tmp_path / "benchmarks"})
    (tmp_path / "guides").mkdir()
    (tmp_path / "guides" / "search.md").write_text("# Search\n")
    source = ["```{toctree}\nguides/quickstart\nguides/search\nguides/distributed\n```\n"
              "```{toctree}\n:glob:\n\nbenchmarks/*\n```\n"]
    tokenprune_docs._drop_missing_optional(None, "index", source)
    assert "guides/search" in source[0] and "guides/distributed" not in source[0]
    assert "benchmarks/*" not in source[0] and "guides/quickstart" in source[0]


def test_add_a_model_example_is_the_validated_file():
    page = (DOCS / "guides" / "add-a-model.md").read_text()
    assert "../examples/my_llava.yaml" in page
    import tokenprune as tp

    spec = tp.load_spec(DOCS / "examples" / "my_llava.yaml")
    assert spec.language_model == "model.language_model" and spec.vision_tokens.token_ids == ["image_token_id"]
