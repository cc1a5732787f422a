"""The resumable trials file: JSON lines, one finished trial per line, appended and fsynced as it completes.

Line 1 is a header naming what the trials were measured on (objective, model, calibration data); a file
written by a different search is refused rather than silently mixed in. Every later line is one
:class:`~.result.Trial`. A process killed while writing leaves at most one truncated last line, which is
ignored on load (and overwritten by the next append), so a kill loses at most the trial in flight.

Trials are keyed by (split, exact keep ratios): the objective of a schedule on a split does not depend on
the method that proposed it, so a rerun, a resumed run or a different method reuses every finished trial.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import TokenPruneError, describe
from .result import Trial

FORMAT_VERSION = 1


class TrialStore:
    """Finished trials by key, optionally backed by an append-only JSON-lines file."""

    def __init__(self, path: str | Path | None, fingerprint: dict[str, Any]) -> None:
        self.path = None if path is None else Path(path)
        self.fingerprint = _canonical(fingerprint)
        self._trials: dict[str, Trial] = {}
        self.loaded = 0  # trials found in the file when it was opened
        if self.path is not None:
            self._open()

    # ------------------------------------------------------------------ API
    def get(self, key: str) -> Trial | None:
        return self._trials.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._trials

    def __len__(self) -> int:
        return len(self._trials)

    def all(self) -> list[Trial]:
        return sorted(self._trials.values(), key=lambda t: t.number)

    def next_number(self) -> int:
        return max((t.number for t in self._trials.values()), default=-1) + 1

    def add(self, trial: Trial) -> None:
        """Keep ``trial`` and, with a file, append it durably (flush + fsync) before returning."""
        self._trials[trial.key] = trial
        if self.path is not None:
            self._append(trial.to_dict())

    def forget(self, key: str) -> None:
        """Drop a trial from memory (used to retry failed trials); the file keeps the history."""
        self._trials.pop(key, None)

    # ------------------------------------------------------------ internals
    def _open(self) -> None:
        assert self.path is not None
        if not self.path.exists() or self.path.stat().st_size == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")
            self._append({"type": "header", "version": FORMAT_VERSION, "fingerprint": self.fingerprint})
            return
        lines = self.path.read_bytes().split(b"\n")
        records, good_bytes = [], 0
        for i, raw in enumerate(lines):
            if not raw.strip():
                good_bytes += len(raw) + 1
                continue
            try:
                records.append(json.loads(raw))
            except json.JSONDecodeError:
                if i >= len(lines) - 2:  # a truncated last line: the trial in flight when killed
                    break
                raise TokenPruneError(describe(f"line {i + 1} of the trials file is not JSON", str(self.path),
                                               "one JSON object per line",
                                               "the file is corrupt; move it away to start afresh")) from None
            good_bytes += len(raw) + 1
        if not records or records[0].get("type") != "header":
            raise TokenPruneError(describe("the trials file has no header line", str(self.path),
                                           "a file written by tokenprune.search", "pass a new trials path"))
        header = records[0]
        if header.get("fingerprint") != self.fingerprint:
            raise TokenPruneError(describe(
                "the trials file was written by a different search "
                f"(file: {header.get('fingerprint')}; now: {self.fingerprint})", str(self.path),
                "the same objective, model and calibration data",
                "pass a new trials path, or delete the file to start afresh"))
        for record in records[1:]:
            trial = Trial.from_dict({k: v for k, v in record.items() if k != "key"})
            self._trials[trial.key] = trial
        self.loaded = len(self._trials)
        if good_bytes < self.path.stat().st_size:  # cut the truncated tail so the next append starts clean
            with open(self.path, "r+b") as fh:
                fh.truncate(min(good_bytes, self.path.stat().st_size))
                fh.flush()
                os.fsync(fh.fileno())
        self._ensure_newline()

    def _ensure_newline(self) -> None:
        assert self.path is not None
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "ab") as fh:
                fh.write(b"\n")
                fh.flush()
                os.fsync(fh.fileno())

    def _append(self, record: dict[str, Any]) -> None:
        assert self.path is not None
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        with open(self.path, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


def _canonical(value: Any) -> Any:
    """JSON round trip, so a fingerprint compares equal to the one read back from a file."""
    return json.loads(json.dumps(value, sort_keys=True, default=repr))
