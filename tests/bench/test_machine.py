"""What a report says it ran on."""

from __future__ import annotations

import subprocess

from tokenprune.bench import machine


def test_source_revision_is_read_once_per_process(monkeypatch):
    # A multi-preset run writes the first preset's report into the tree before the second preset starts:
    # the second report must still name the tree as it was when the measured code was imported.
    calls = []
    outputs = iter(["abc123\n", "", "abc123\n", " M benchmarks/results/speed.json\n"])

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout=next(outputs), stderr="")

    machine.source_revision.cache_clear()
    monkeypatch.setattr(subprocess, "run", fake_run)
    try:
        first = machine.source_revision()
        second = machine.source_revision()
    finally:
        machine.source_revision.cache_clear()
    assert first == second == {"commit": "abc123", "modified_files": 0}
    assert len(calls) == 2  # rev-parse and status, once
