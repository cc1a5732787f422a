"""Run the conformance tests case by case, so that one compile of a case serves all its tests
(:func:`.cases.compiled_case`)."""

from __future__ import annotations

from pathlib import Path

from .cases import case_id, case_of

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    """Group the conformance items by case, in place (stable: test order within a case is kept); other items
    keep their positions."""
    slots = [i for i, item in enumerate(items) if item.path.is_relative_to(HERE) and case_of(item) is not None]
    first_seen: dict[str, int] = {}
    for i in slots:
        first_seen.setdefault(case_id(case_of(items[i])), len(first_seen))
    grouped = sorted((items[i] for i in slots), key=lambda item: first_seen[case_id(case_of(item))])
    for i, item in zip(slots, grouped):
        items[i] = item
