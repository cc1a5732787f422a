"""Benchmark reports: one JSON document per run, with the machine it ran on and what it measured."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1


@dataclass
class Report:
    """A benchmark run. ``results`` holds plain JSON values only (dicts, lists, numbers, strings, None)."""

    kind: str  # "speed" | "prefill"
    preset: dict
    machine: dict
    settings: dict
    results: dict = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return _clean(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> Report:
        if data.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"benchmark report schema {data.get('schema')!r}, expected {SCHEMA_VERSION}")
        unknown = set(data) - {"kind", "preset", "machine", "settings", "results", "schema"}
        if unknown:
            raise ValueError(f"unknown keys in benchmark report: {sorted(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Report:
        return cls.from_dict(json.loads(text))

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def read(cls, path: str | Path) -> Report:
        return cls.from_json(Path(path).read_text())


def _clean(value):
    """JSON-safe copy: tuples to lists, int keys to strings, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bool) or value is None or isinstance(value, (int, float, str)):
        return value
    return str(value)
