"""A built wheel (not only the checkout) installs one import root and finds the bundled specs and family modules."""

import site
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
    python = _venv_seeing_running_packages(env_dir)
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True)
    script = (
        "import sys, tokenprune, tokenprune.rewrites, tokenprune.model_specs;"
        "spec = tokenprune.load_spec('llava'); tokenprune.load_spec('gemma4');"  # gemma4: a family plug-in module
        "print(sorted({m.__file__ for n, m in sys.modules.items() if n.startswith('tokenprune') and m.__file__}));"
        "print(spec.name, sorted(tokenprune.bundled_spec_names()))"
    )
    out = subprocess.run([str(python), "-c", script], check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    files, names = out.strip().splitlines()
    # Every tokenprune module must come from the wheel, none from the checkout (an editable install leaks).
    assert str(env_dir) in files and str(ROOT / "tokenprune") not in files and str(ROOT / "rewrites") not in files
    assert "model_specs/gemma4.py" in files and str(ROOT / "model_specs") not in files  # .py beside the YAMLs ships
    assert names.startswith("llava [") and "'internvl'" in names and "'llava_next'" in names


def _venv_seeing_running_packages(env_dir: Path, with_pip: bool = True) -> Path:
    """A venv whose own site-packages comes first, then the running interpreter's (torch, transformers, ...).

    ``system_site_packages=True`` would add the *base* interpreter's packages, which lack the dependencies when
    this suite itself runs in a venv. The paths are listed plainly (not as site dirs), so the running
    interpreter's ``.pth`` files, an editable install of the checkout among them, are not executed.
    """
    venv.create(env_dir, system_site_packages=False, with_pip=with_pip)
    python = env_dir / "bin" / "python"
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True).stdout.strip()
    running = [p for p in site.getsitepackages() if Path(p).is_dir() and not Path(p).is_relative_to(env_dir)]
    (Path(own) / "running_interpreter_packages.pth").write_text("\n".join(running) + "\n")
    return python


def test_nested_venv_sees_the_running_interpreters_packages(tmp_path):
    python = _venv_seeing_running_packages(tmp_path / "venv", with_pip=False)
    import torch

    out = subprocess.run([str(python), "-c", "import torch, sys; print(torch.__file__); print(sys.prefix)"],
                         check=True, capture_output=True, text=True).stdout.splitlines()
    assert out == [torch.__file__, str(tmp_path / "venv")]


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
