"""Speed and memory benchmarks of tokenprune: measured prefill, decode, memory and KV cache against FLOPs.

    from tokenprune.bench import run_speed, run_prefill, write_pages
    report = run_speed("llama-12l", device="cpu", dtype="float32")
    report.write("benchmarks/results/speed-llama-12l-cpu-float32.json")

Command line: ``python -m tokenprune.bench {speed,prefill,page}`` (``benchmarks/speed.py``, ``benchmarks/prefill.py``).
Modules: ``presets`` (shapes, random models, prompts), ``variants`` (what is compared), ``masking`` (the masking
baseline), ``memory`` / ``measure`` / ``nodecost`` / ``compiletime`` (measurements), ``targets``,
``report`` (JSON), ``plots`` and ``page`` (docs).
"""

from .page import write_pages
from .presets import PRESETS, Preset, build_model, get_preset, make_inputs
from .report import Report
from .runner import run_prefill, run_speed

__all__ = ["PRESETS", "Preset", "Report", "build_model", "get_preset", "make_inputs", "run_prefill", "run_speed",
           "write_pages"]
