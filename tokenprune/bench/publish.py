"""Where benchmark output goes: a scratch folder by default; the checkout's published pages only on request.

The published pages (``docs/benchmarks/*.md``) state the git commit they were measured on, so they may only
be written from a checkout without local changes: otherwise nobody can rebuild the code that was measured.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from tokenprune.errors import UnsupportedError, describe

from .machine import modified_tracked_files, source_checkout

CHECKOUT = source_checkout()  # None when tokenprune is installed rather than run from a clone
RESULTS_FOLDER = Path("benchmarks") / "results"  # inside the checkout: the JSON reports
PAGES_FOLDER = Path("docs") / "benchmarks"  # the pages and their figures
PUBLISHED_RESULTS = (CHECKOUT or Path.cwd()) / RESULTS_FOLDER


@dataclass(frozen=True)
class Destination:
    """``results``: JSON reports; ``pages``: the generated markdown pages and their figures."""

    results: Path
    pages: Path
    published: bool


def destination(out: str | Path | None, publish: bool) -> Destination:
    """``--publish``: the checkout's tracked results and pages (clean tree only); else ``out`` or a new temp dir."""
    if publish:
        if out is not None:
            raise UnsupportedError(describe("--out and --publish together", "tokenprune bench",
                                            "one of them", "--publish always writes benchmarks/results and "
                                            "docs/benchmarks of the checkout"))
        if CHECKOUT is None:
            raise UnsupportedError(describe("tokenprune is an installed package, not a git checkout", "--publish",
                                            "tokenprune imported from a clone of the repository (pip install -e .)",
                                            "publish from a clone, or pass --out DIR"))
        require_clean_checkout(CHECKOUT)
        return Destination(CHECKOUT / RESULTS_FOLDER, CHECKOUT / PAGES_FOLDER, published=True)
    root = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="tokenprune-bench-"))
    return Destination(root / "results", root, published=False)


def require_clean_checkout(root: Path, where: str = "--publish") -> None:
    """Refuse to publish from an installed package or from a checkout with uncommitted changes."""
    modified = modified_tracked_files(root)
    if modified is None:
        raise UnsupportedError(describe(f"{root} is not a git checkout", where,
                                        "a clone of the repository (the pages record the commit they measured)",
                                        "run without --publish to write the results to a folder of your choice"))
    if modified:
        shown = ", ".join(modified[:5]) + (f" and {len(modified) - 5} more" if len(modified) > 5 else "")
        raise UnsupportedError(describe(f"the checkout has {len(modified)} modified tracked file(s): {shown}",
                                        where, "a clean tree, so the published pages name a commit that "
                                        "holds the measured code", "commit or stash the changes, then rerun"))
