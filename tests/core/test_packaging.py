"""A built wheel (not only the checkout) installs one import root and finds the bundled specs."""

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_installs_and_loads_bundled_specs(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next(dist.glob("tokenprune_mllm-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True)
    script = (
        "import sys, tokenprune, tokenprune.rewrites, tokenprune.model_specs;"
        "spec = tokenprune.load_spec('llava');"
        "print(sorted({m.__file__ for n, m in sys.modules.items() if n.startswith('tokenprune') and m.__file__}));"
        "print(spec.name, sorted(tokenprune.bundled_spec_names()))"
    )
    out = subprocess.run([str(python), "-c", script], check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    files, names = out.strip().splitlines()
    # Every tokenprune module must come from the wheel, none from the checkout (an editable install leaks).
    assert str(env_dir) in files and str(ROOT / "tokenprune") not in files and str(ROOT / "rewrites") not in files
    assert names.startswith("llava [") and "'internvl'" in names and "'llava_next'" in names


def test_package_list_covers_every_package_folder():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    mapping = {"tokenprune": ROOT / "tokenprune", "tokenprune.rewrites": ROOT / "rewrites",
               "tokenprune.model_specs": ROOT / "model_specs"}
    found = set()
    for name, folder in mapping.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            found.add(".".join((name, *rel)) if rel else name)
    assert found == listed
