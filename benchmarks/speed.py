"""Speed and memory benchmark: prefill, decode, peak memory, KV cache, compile time, node costs, scaling.

    python benchmarks/speed.py                       # CPU: 12-layer preset + 7B-shape compile; prints the numbers
    python benchmarks/speed.py --preset llava-7b --device cuda --dtype bfloat16
    python benchmarks/speed.py --publish             # from a clean checkout: the published page
    python benchmarks/speed.py --preset llama-12l --nodes-only   # only the inserted-node timing (selector rows)
    python benchmarks/speed.py --help

Writes its reports, figures and page to --out (default: a new temp folder); with --publish to
benchmarks/results/speed-*.json (reports) and docs/benchmarks/ (speed.md and its figures).
"""

import sys

import torch

from tokenprune.bench.cli import main

if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main(["speed", *sys.argv[1:]]))
