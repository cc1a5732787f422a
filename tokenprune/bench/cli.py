"""Command line of the benchmarks: ``tokenprune bench {speed,prefill,page}`` (also ``python -m tokenprune.bench``).

``benchmarks/speed.py`` and ``benchmarks/prefill.py`` are thin wrappers around ``speed`` and ``prefill``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from tokenprune.errors import TokenPruneError, UnsupportedError, describe

from .page import write_pages
from .publish import PUBLISHED_RESULTS, Destination, destination
from .report import Report
from .runner import run_prefill, run_speed
from .terminal import summary
from .variants import SELECTORS

DEFAULT_SPEED_PRESETS = ["llama-12l", "llava-7b"]

DESCRIPTION = """Measure prefill, decode, memory and compile time of pruned models against FLOPs.

Each run prints its numbers and writes JSON reports (under results/), the generated pages and their figures to
--out (default: a new folder under the system temp dir, printed at the end). --publish writes the reports to
the checkout's benchmarks/results and the pages and figures to its docs/benchmarks instead, and refuses to run
unless every tracked file is committed, so that the published pages name the commit that was measured."""


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="folder for reports, figures and pages (default: a new temp dir)")
    p.add_argument("--publish", action="store_true",
                   help="write the published pages (docs/benchmarks) of a clean git checkout")


def _common(p: argparse.ArgumentParser) -> None:
    _output(p)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    p.add_argument("--no-page", action="store_true", help="write the reports only, no pages")


def parser(prog: str = "tokenprune bench") -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog=prog, description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = root.add_subparsers(dest="command", required=True, metavar="{speed,prefill,page}")

    speed = sub.add_parser("speed", help="prefill, decode, memory, KV cache, compile time, node costs, scaling")
    speed.add_argument("--preset", action="append", help="tiny, llama-12l or llava-7b (repeatable; default: "
                       + " and ".join(DEFAULT_SPEED_PRESETS) + ")")
    speed.add_argument("--device", default="cpu")
    speed.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (CUDA default)")
    speed.add_argument("--repeats", type=int, default=5)
    speed.add_argument("--warmup", type=int, default=1)
    speed.add_argument("--decode-tokens", type=int, default=None)
    speed.add_argument("--decode-repeats", type=int, default=2)
    speed.add_argument("--node-repeats", type=int, default=5)
    speed.add_argument("--scaling", type=int, nargs="*", default=None, help="vision-token counts (default: preset's)")
    speed.add_argument("--scaling-repeats", type=int, default=3)
    speed.add_argument("--scaling-decode-tokens", type=int, default=8)
    speed.add_argument("--variants", nargs="+", default=None,
                       help="variant names (default: all; a name + '-compiled' runs it under torch.compile)")
    speed.add_argument("--selectors", nargs="*", default=list(SELECTORS),
                       help="selectors whose inserted nodes are timed at the FastV schedule (default: "
                       + ", ".join(SELECTORS) + "; none: --selectors with no name)")
    speed.add_argument("--nodes-only", action="store_true",
                       help="only the inserted-node timing of FastV and --selectors (no prefill, decode, memory, "
                       "compile or scaling); writes reports, no page")
    _common(speed)

    prefill = sub.add_parser("prefill", help="prefill of the original, compiled keep-all and FastV models "
                             "(float32 and bfloat16)")
    prefill.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    prefill.add_argument("--repeats", type=int, default=7)
    prefill.add_argument("--warmup", type=int, default=1)
    prefill.add_argument("--node-repeats", type=int, default=3)
    prefill.add_argument("--device", default="cpu")
    _common(prefill)

    page = sub.add_parser("page", help="regenerate the pages from existing reports")
    page.add_argument("--results", default=str(PUBLISHED_RESULTS),
                      help="folder of JSON reports (default: the checkout's benchmarks/results)")
    _output(page)
    return root


def main(argv: list[str] | None = None, prog: str = "tokenprune bench") -> int:
    args = parser(prog).parse_args(argv)
    try:
        return _run(args)
    except TokenPruneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if getattr(args, "nodes_only", False):
        if args.publish:
            raise UnsupportedError(describe("--nodes-only with --publish", "tokenprune bench speed",
                                            "a full run for the published pages", "drop one of the two options"))
        args.no_page = True
    where = destination(args.out, args.publish)
    if args.command == "page":
        for path in sorted(Path(args.results).glob("*.json")):
            print(summary(Report.read(path)) + "\n")
        _write_pages(Path(args.results), where)
        return 0
    with torch.no_grad():  # scoped: a caller (a test, a notebook) keeps its own autograd state
        for report in _measure(args):
            print(summary(report) + "\n")
            report.write(where.results / _report_name(report, args))
    if not args.no_page:
        _write_pages(where.results, where)
    print(f"reports: {where.results}; pages and figures: {where.pages}")
    return 0


def _measure(args: argparse.Namespace):
    if args.command == "prefill":
        yield run_prefill(args.dtypes, repeats=args.repeats, warmup=args.warmup, node_repeats=args.node_repeats,
                          threads=args.threads, device=args.device)
        return
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    presets = args.preset or (DEFAULT_SPEED_PRESETS if not args.device.startswith("cuda") else ["llava-7b"])
    for preset in presets:
        yield run_speed(preset, args.device, dtype, repeats=args.repeats, warmup=args.warmup,
                        decode_tokens=args.decode_tokens, decode_repeats=args.decode_repeats,
                        node_repeats=args.node_repeats, scaling=args.scaling, scaling_repeats=args.scaling_repeats,
                        scaling_decode_tokens=args.scaling_decode_tokens, variants=args.variants,
                        threads=args.threads, selectors=args.selectors, nodes_only=args.nodes_only)


def _report_name(report: Report, args: argparse.Namespace) -> str:
    if report.kind == "prefill":
        return f"prefill-{args.device}.json"
    device = "cuda" if args.device.startswith("cuda") else args.device
    if args.nodes_only:
        return f"nodes-{report.preset['name']}-{device}-{report.settings['dtype']}.json"
    return f"speed-{report.preset['name']}-{device}-{report.settings['dtype']}.json"


def _write_pages(results: Path, where: Destination) -> None:
    for path in write_pages(results, where.pages):
        print(f"{'published' if where.published else 'wrote'} {path}")


if __name__ == "__main__":
    sys.exit(main(prog="python -m tokenprune.bench"))
