"""Sphinx extension that regenerates the docs' generated pages on every build (``builder-inited``).

Pages: the model support table and one page per bundled spec (``generated/models.md``,
``generated/specs/*.md``), the spec-format reference from the JSON Schema (``generated/spec-schema.md``),
the schedule gallery (``generated/gallery.md``), the CLI reference (``generated/cli.md``) and the
kept-patch picture (``generated/fragments/overlay.md``). It also drops toctree entries of optional pages
that other work streams own (search guides, benchmark pages) while those pages do not exist yet.
"""

from __future__ import annotations

import os
import re
import time

from sphinx.util import logging

from .common import DOCS

logger = logging.getLogger(__name__)

# Pages written elsewhere; a toctree line naming one is dropped while its file is missing.
OPTIONAL_PAGES = ("guides/search", "guides/distributed")
OPTIONAL_GLOBS = {"benchmarks/*": DOCS / "benchmarks"}


def _generate(app) -> None:
    from .clipage import generate_cli_page
    from .gallery import generate_gallery
    from .overlay import generate_overlay
    from .schema import generate_schema_page
    from .specpages import generate_spec_pages
    from .support import generate_support_table

    steps = [("spec pages", lambda: generate_support_table(generate_spec_pages())),
             ("spec schema", generate_schema_page), ("schedule gallery", generate_gallery),
             ("CLI reference", generate_cli_page), ("kept-patch picture", generate_overlay)]
    for name, step in steps:
        start = time.perf_counter()
        step()
        logger.info(f"[tokenprune_docs] {name}: {time.perf_counter() - start:.1f}s")


def _page_exists(docname: str) -> bool:
    return any((DOCS / f"{docname}{ext}").is_file() for ext in (".md", ".rst"))


def _drop_missing_optional(app, docname: str, source: list[str]) -> None:
    """On the root page only: remove toctree lines naming optional pages that do not exist (yet)."""
    if docname != "index":
        return
    text = source[0]
    for page in OPTIONAL_PAGES:
        if not _page_exists(page):
            text = re.sub(rf"^{re.escape(page)}\s*$\n?", "", text, flags=re.MULTILINE)
    for pattern, folder in OPTIONAL_GLOBS.items():
        if not (folder.is_dir() and any(folder.glob("*.md")) or folder.is_dir() and any(folder.glob("*.rst"))):
            text = re.sub(rf"^{re.escape(pattern)}\s*$\n?", "", text, flags=re.MULTILINE)
    source[0] = text


def setup(app):
    if not os.environ.get("TOKENPRUNE_DOCS_SKIP_GENERATE"):
        app.connect("builder-inited", _generate)
    app.connect("source-read", _drop_missing_optional)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
