"""Command line of the benchmarks: ``python -m tokenprune.bench {speed,prefill,page}``.

``benchmarks/speed.py`` and ``benchmarks/prefill.py`` are thin wrappers around ``speed`` and ``prefill``.
Each run writes its JSON report under ``--results`` and regenerates the docs pages under ``--docs``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .page import write_pages
from .runner import run_prefill, run_speed

DEFAULT_SPEED_PRESETS = ["llama-12l", "llava-7b"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="benchmarks/results", help="folder of JSON reports and figures")
    p.add_argument("--docs", default="docs/benchmarks", help="folder of the generated pages")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    p.add_argument("--no-page", action="store_true", help="do not regenerate the docs pages")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m tokenprune.bench", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)

    speed = sub.add_parser("speed", help="prefill, decode, memory, KV cache, compile time, node costs, scaling")
    speed.add_argument("--preset", action="append", help="tiny, llama-12l or llava-7b (repeatable; default: "
                       + " and ".join(DEFAULT_SPEED_PRESETS) + ")")
    speed.add_argument("--device", default="cpu")
    speed.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (CUDA default)")
    speed.add_argument("--repeats", type=int, default=5)
    speed.add_argument("--warmup", type=int, default=1)
    speed.add_argument("--decode-tokens", type=int, default=None)
    speed.add_argument("--decode-repeats", type=int, default=2)
    speed.add_argument("--node-repeats", type=int, default=3)
    speed.add_argument("--scaling", type=int, nargs="*", default=None, help="vision-token counts (default: preset's)")
    speed.add_argument("--scaling-repeats", type=int, default=3)
    speed.add_argument("--scaling-decode-tokens", type=int, default=8)
    speed.add_argument("--variants", nargs="+", default=None,
                       help="variant names (default: all; a name + '-compiled' runs it under torch.compile)")
    _common(speed)

    prefill = sub.add_parser("prefill", help="issue 2's prefill benchmark (original, keep-all, FastV; fp32, bf16)")
    prefill.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    prefill.add_argument("--repeats", type=int, default=7)
    prefill.add_argument("--warmup", type=int, default=1)
    prefill.add_argument("--node-repeats", type=int, default=3)
    prefill.add_argument("--device", default="cpu")
    _common(prefill)

    page = sub.add_parser("page", help="regenerate the docs pages from the reports")
    page.add_argument("--results", default="benchmarks/results")
    page.add_argument("--docs", default="docs/benchmarks")
    return root


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.command == "page":
        for path in write_pages(args.results, args.docs):
            print(f"wrote {path}")
        return
    results = Path(args.results)
    if args.command == "speed":
        dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
        presets = args.preset or (DEFAULT_SPEED_PRESETS if not args.device.startswith("cuda") else ["llava-7b"])
        for preset in presets:
            report = run_speed(preset, args.device, dtype, repeats=args.repeats, warmup=args.warmup,
                               decode_tokens=args.decode_tokens, decode_repeats=args.decode_repeats,
                               node_repeats=args.node_repeats, scaling=args.scaling,
                               scaling_repeats=args.scaling_repeats, scaling_decode_tokens=args.scaling_decode_tokens,
                               variants=args.variants, threads=args.threads)
            device = "cuda" if args.device.startswith("cuda") else args.device
            path = report.write(results / f"speed-{preset}-{device}-{dtype}.json")
            print(f"wrote {path}")
    else:
        report = run_prefill(args.dtypes, repeats=args.repeats, warmup=args.warmup, node_repeats=args.node_repeats,
                             threads=args.threads, device=args.device)
        path = report.write(results / f"prefill-{args.device}.json")
        print(f"wrote {path}")
    if not args.no_page:
        for path in write_pages(results, args.docs):
            print(f"wrote {path}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
