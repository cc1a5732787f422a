"""A family added from outside the package: an installed distribution with a ``tokenprune.plugins`` entry point."""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import pytest
import yaml

import tokenprune as tp
from tokenprune.errors import SpecError
from tokenprune.testing.conformance import check_spec

EXAMPLE = Path(__file__).parent / "example_family"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example plug-in installed as ``pip install --target`` would: its module next to a ``.dist-info``
    folder whose ``entry_points.txt`` names it, on ``sys.path``."""
    site = tmp_path_factory.mktemp("site")
    shutil.copy(EXAMPLE / "tp_example_family.py", site)
    info = site / "tp_example_family-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tp-example-family\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tokenprune.plugins]\nexample_family = tp_example_family\n")
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    yield site
    sys.path.remove(str(site))
    importlib.invalidate_caches()


def test_a_spec_naming_the_plugin_loads_it_and_passes_conformance(installed):
    spec = tp.load_spec(EXAMPLE / "example_family.yaml")
    module = sys.modules["tp_example_family"]  # imported through its entry point by load_spec
    assert module.__file__.startswith(str(installed))
    before = dict(module.CALLS)
    report = check_spec(spec)
    assert report.passed, "\n".join(report.lines())
    assert len(report.checks) == 3
    used = {kind: module.CALLS[kind] - before.get(kind, 0) for kind in ("rope", "hint", "test_inputs")}
    assert all(count > 0 for count in used.values()), f"the plug-in's entries were not all used: {used}"


def test_an_unknown_plugin_name_is_a_clear_error(installed, tmp_path):
    data = yaml.safe_load((EXAMPLE / "example_family.yaml").read_text())
    data["plugins"] = ["example_famly"]
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"no plug-in module named 'example_famly'.*typo.yaml: plugins.*"
                                        r"'tokenprune.plugins'.*did you mean \['example_family'\]"):
        tp.load_spec(path)


def test_an_entry_the_spec_names_but_no_plugin_registers_is_a_clear_error(installed, tmp_path):
    from tokenprune.plugins.resolve import resolve_spec

    data = yaml.safe_load((EXAMPLE / "example_family.yaml").read_text())
    data["attention"]["rope"] = "example_rotate_halves"
    path = tmp_path / "wrong_rope.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"unknown rope 'example_rotate_halves'.*attention.rope.*"
                                        r"did you mean \['example_rotate_half'"):
        resolve_spec(tp.load_spec(path))
