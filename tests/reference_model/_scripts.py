"""The reference-model scripts (build.py, train.py, aids.py, photo/recipe.py) loaded as modules for the photo tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path):
    sys.path.insert(0, str(ROOT / "reference_model"))  # the scripts import each other by bare name
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build = _load("reference_model_build", ROOT / "reference_model" / "build.py")
train = _load("reference_model_train", ROOT / "reference_model" / "train.py")
recipe = _load("reference_model_photo_recipe", ROOT / "reference_model" / "photo" / "recipe.py")
aids = _load("reference_model_aids", ROOT / "reference_model" / "aids.py")
diagnose = _load("reference_model_photo_diagnose", ROOT / "reference_model" / "photo" / "diagnose.py")
PHOTO = build.SUITES["photo"]
