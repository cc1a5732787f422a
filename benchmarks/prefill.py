"""Prefill benchmark: random LLaVA, 12-layer hidden-1024 Llama text model, 576 vision + 64 text tokens.

Medians over interleaved runs of original, compiled keep-all and FastV(K=2, keep 25%), fp32 and bf16, CPU;
exact FLOPs ratio next to the measured time ratio, plus a micro-benchmark of the inserted nodes.

    python benchmarks/prefill.py            # prints the numbers; report and page in a new temp folder (or --out)
    python benchmarks/prefill.py --publish  # from a clean checkout: benchmarks/results and docs/benchmarks
"""

import sys

import torch

from tokenprune.bench.cli import main

if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main(["prefill", *sys.argv[1:]]))
