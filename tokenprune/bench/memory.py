"""Peak memory of a call and the bytes held by a KV cache.

CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before the call. CPU: the increase
of the process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``) over the resident
set before the call. glibc's allocator is pinned to a fixed mmap threshold and trimmed first, so freed
tensors go back to the system and the peak reflects the call's own allocations.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable

import torch

_M_MMAP_THRESHOLD = -3


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _libc()
if _LIBC is not None:
    _LIBC.mallopt(_M_MMAP_THRESHOLD, 1 << 16)  # allocations >= 64 KiB map and unmap pages directly


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_cpu_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory(fn: Callable[[], object], device: torch.device | str = "cpu") -> dict:
    """Run ``fn`` once; return its peak extra memory in bytes and how it was measured."""
    device = torch.device(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del result
        return {"peak_bytes": int(peak), "method": "torch.cuda.max_memory_allocated - allocated before"}
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    if not _reset_cpu_peak():
        return {"peak_bytes": None, "method": "unavailable (no /proc/self/clear_refs)"}
    before = _status_kib("VmRSS")
    result = fn()
    peak = _status_kib("VmHWM")
    del result
    return {"peak_bytes": int((peak - before) * 1024), "method": "peak RSS (VmHWM) - RSS before, glibc trimmed"}


def kv_cache_bytes(cache) -> list[int]:
    """Bytes of keys plus values held by each layer of a ``DynamicCache``."""
    out = []
    for layer in cache.layers:
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        out.append(sum(t.numel() * t.element_size() for t in (keys, values) if isinstance(t, torch.Tensor)))
    return out


def kv_cache_lengths(cache) -> list[int]:
    """Sequence length held by each layer of a ``DynamicCache``."""
    return [int(layer.keys.shape[-2]) if isinstance(getattr(layer, "keys", None), torch.Tensor) else 0
            for layer in cache.layers]
