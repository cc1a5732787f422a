"""The ```python blocks of a Markdown page, and a runner that executes them in order in one namespace.

A block whose fence is preceded (on the line before) by ``<!-- no-run: REASON -->`` is not executed: it needs a
real checkpoint or a GPU. Everything else must run as written. A ```text block that directly follows a python
block (blank lines only in between) is the output that block prints, and is compared with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

NO_RUN = re.compile(r"^<!--\s*no-run:\s*(?P<reason>\S.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<ticks>`{3,})(?P<lang>[^`\s]*)")


@dataclass(frozen=True)
class Block:
    page: str
    line: int            # 1-based line of the opening fence
    end: int             # 1-based line of the closing fence
    lang: str
    code: str
    no_run: str | None   # the reason given by a `no-run` marker, if any

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(path: Path, page: str) -> list[Block]:
    """Every fenced block of ``path`` (any language), in order; ``page`` names it in messages."""
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        ticks, start = opening["ticks"], i
        i += 1
        while i < len(lines) and lines[i].rstrip() != ticks:
            i += 1
        marker = NO_RUN.match(lines[start - 1]) if start > 0 else None
        found.append(Block(page, start + 1, i + 1, opening["lang"], "\n".join(lines[start + 1:i]) + "\n",
                           marker["reason"] if marker else None))
        i += 1
    return found


def shown_output(block: Block, following: Block | None, lines: list[str]) -> str | None:
    """The ```text block right after ``block`` (blank lines only in between): what the page says it prints."""
    if following is None or following.lang != "text":
        return None
    between = lines[block.end:following.line - 1]
    return following.code if all(not line.strip() for line in between) else None


def runnable(path: Path, page: str) -> list[dict]:
    """The blocks to execute, in order, each with where it is and the output the page shows for it (or None)."""
    found, lines = blocks(path, page), path.read_text().splitlines()
    return [{"where": b.where, "code": b.code, "expect": shown_output(b, after, lines)}
            for b, after in zip(found, [*found[1:], None]) if b.lang == "python" and not b.no_run]


# Executed in a fresh interpreter per page: the blocks arrive as JSON on stdin.
RUNNER = r'''
import contextlib, io, json, sys, traceback
namespace = {"__name__": "__main__"}
for block in json.load(sys.stdin):
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(block["code"], block["where"], "exec"), namespace)
    except BaseException:
        print(printed.getvalue(), f"\nFAILED: the python block at {block['where']}", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
    lines = lambda text: [line.rstrip() for line in text.strip().splitlines()]
    if block["expect"] is not None and lines(printed.getvalue()) != lines(block["expect"]):
        print(f"\nFAILED: the python block at {block['where']} printed\n{printed.getvalue()}"
              f"but the page shows\n{block['expect']}", file=sys.stderr)
        sys.exit(1)
    print(f"ran {block['where']}", file=sys.stderr)
'''
