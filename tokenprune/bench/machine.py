"""What a benchmark ran on: CPU, threads, accelerator, library versions, load average."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import time
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def source_checkout() -> Path | None:
    """The git checkout this package is imported from (a clone or an editable install), or None for an
    installed package: its parent folder is then site-packages, which no commit describes."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / ".git").exists() else None


def git_output(root: Path, *args: str) -> str | None:
    """What ``git args`` prints in ``root``; None when git is missing or fails (``root`` is no checkout)."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def modified_tracked_files(root: Path) -> list[str] | None:
    """Tracked files with local changes (staged or not), or None when ``root`` is not a git checkout."""
    status = git_output(root, "status", "--porcelain", "--untracked-files=no")
    return None if status is None else [line[3:] for line in status.splitlines() if line.strip()]


@functools.cache
def source_revision() -> dict | None:
    """The git commit of the checkout the package runs from, and how many tracked files it had modified.

    Read once per process: a run that publishes several presets writes the first one's report into the tree
    before the next preset starts, which must not count as a local change of the measured code."""
    root = source_checkout()
    commit = git_output(root, "rev-parse", "HEAD") if root is not None else None
    if commit is None:
        return None
    return {"commit": commit.strip(), "modified_files": len(modified_tracked_files(root) or [])}


def machine_info(device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> dict:
    import transformers

    import tokenprune

    device = torch.device(device)
    info = {
        "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenprune": tokenprune.__version__,
        "device": str(device),
        "dtype": str(dtype).replace("torch.", "") if dtype is not None else None,
        "load_average_start": load_average(),
        "source": source_revision(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info
