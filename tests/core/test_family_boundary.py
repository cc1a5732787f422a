"""One family, one place: the core never names a bundled family, and a spec's plug-in modules provide every
family-specific name it uses."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tokenprune as tp
from tokenprune.testing.builders import build_test_config

ROOT = Path(__file__).resolve().parents[2]
CORE = [ROOT / "rewrites", ROOT / "tokenprune" / "scoring"]  # the tracer, pass and runtime, and the scorers

# Exact identifiers the core may spell although they contain a family's name: Hugging Face config keys.
CONFIG_KEYS = ("llama_4_scaling_beta",)


def _model_types(config) -> set[str]:
    """``model_type`` of a config and of every sub-config inside it (text, vision, audio, ...)."""
    from transformers import PretrainedConfig

    found = {config.model_type}
    for value in vars(config).values():
        if isinstance(value, PretrainedConfig):
            found |= _model_types(value)
    return found


def family_names() -> set[str]:
    """Every bundled spec's name, its architectures' class names and the model types of its test config."""
    names: set[str] = set()
    for name in tp.bundled_spec_names():
        spec = tp.load_spec(name)
        names |= {spec.name, *spec.architectures, *_model_types(build_test_config(spec))}
    return names


def name_pattern(name: str) -> re.Pattern:
    """``name`` as a whole word, case-insensitive, its letter and digit runs joined by an optional separator:
    ``qwen2_vl`` also finds "Qwen2-VL", ``gemma3n`` "Gemma 3n", ``kosmos-2.5`` "Kosmos 2.5". Whole words only, so
    ordinary words that contain a short name ("variants" contains "aria") do not count; no name is excluded."""
    parts = re.findall(r"[a-z]+|\d+", name.lower())
    return re.compile(r"(?<![a-z0-9])" + r"[\s_\-.]?".join(map(re.escape, parts)) + r"(?![a-z0-9])", re.IGNORECASE)


def core_mentions(files, names) -> list[str]:
    patterns = {name: name_pattern(name) for name in names}
    found = []
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for key in CONFIG_KEYS:
                line = line.replace(key, "")
            hits = sorted(name for name, pattern in patterns.items() if pattern.search(line))
            if hits:
                found.append(f"{path.relative_to(ROOT)}:{number}: {hits}: {line.strip()}")
    return found


def test_the_pattern_finds_a_family_however_it_is_spelled_and_only_as_a_word():
    assert name_pattern("qwen2_vl").search("the Qwen2-VL family")
    assert name_pattern("gemma3n").search("Gemma 3n's streams") and name_pattern("gemma3n").search("gemma3n_altup")
    assert name_pattern("kosmos-2.5").search("Kosmos-2.5")
    assert not name_pattern("aria").search("the variants") and not name_pattern("llama").search("llama4")
    assert core_mentions([ROOT / "model_specs" / "gemma4.py"], {"gemma4"})  # a family module does name it


def test_no_core_module_names_a_bundled_family():
    names = family_names()
    assert {"gemma4", "Gemma4ForConditionalGeneration", "llama", "persimmon", "siglip_vision_model"} <= names
    files = sorted(f for folder in CORE for f in folder.rglob("*.py"))
    assert len(files) > 20
    mentions = core_mentions(files, names)
    assert not mentions, "family knowledge in the core (move it to model_specs/<family>.py):\n" + "\n".join(mentions)


# Run in a fresh interpreter: what the core registers, what each plug-in module adds, and what each spec uses.
_PROVIDERS = r"""
import json, sys
from importlib import resources

import yaml

import tokenprune as tp
from tokenprune.plugins import load_plugins, registry
import tokenprune.plugins.resolve  # the core's built-in runtime entries (registered when a spec is resolved)
import tokenprune.testing  # the core's built-in test builders (registered when test models are built)

KINDS = ("rope", "qk", "tracing_hint", "hidden_states", "locator", "test_inputs", "test_stand_in", "test_weights",
         "tower_reader", "vision_tiling")


def family_modules():
    return {m.rsplit(".", 1)[1] for m in sys.modules if m.startswith("tokenprune.model_specs.")}


def registered():
    return {kind: set(registry(kind).names()) for kind in KINDS}


def used(spec):
    names = {"rope": [spec.attention.rope], "qk": [spec.attention.qk] if spec.attention.qk else [],
             "tracing_hint": list(spec.tracing.hints), "hidden_states": [spec.tracing.hidden_states],
             "locator": [spec.vision_tokens.locator] if spec.vision_tokens.locator else []}
    test = getattr(spec, "test_model", None)
    if test is not None:
        names.update(test_inputs=[test.inputs], test_stand_in=list(test.stand_ins.values()),
                     test_weights=[test.weights] if test.weights else [])
    return names


raw = {n: yaml.safe_load((resources.files("tokenprune.model_specs") / f"{n}.yaml").read_text())
       for n in tp.bundled_spec_names()}
plugins = {n: data.get("plugins") or [] for n, data in raw.items()}
specs = {n: tp.load_spec(n) for n in raw if not plugins[n]}  # the core alone serves these
imported_by_plain_specs = sorted(family_modules())
core = registered()
provides, imports = {}, {}
for module in sorted({p for names in plugins.values() for p in names}):
    before, modules = registered(), family_modules()
    load_plugins([module])
    provides[module] = {kind: sorted(names - before[kind]) for kind, names in registered().items()}
    imports[module] = sorted(family_modules() - modules)
specs.update({n: tp.load_spec(n) for n in raw if plugins[n]})
print(json.dumps({"imported_by_plain_specs": imported_by_plain_specs, "plugins": plugins,
                  "core": {kind: sorted(names) for kind, names in core.items()}, "provides": provides,
                  "imports": imports, "uses": {n: used(spec) for n, spec in specs.items()}}))
"""


def _run(script: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def providers() -> dict:
    return _run(_PROVIDERS)


def test_specs_without_plugins_import_no_family_module(providers):
    assert providers["imported_by_plain_specs"] == []


def test_each_family_module_imports_only_itself_and_registers_something(providers):
    assert len(providers["imports"]) >= 10
    for module, imported in providers["imports"].items():
        assert imported == [module], f"importing {module} imported the family modules {imported}"
        assert any(providers["provides"][module].values()), f"{module} registers nothing"


def test_every_name_a_spec_uses_comes_from_the_core_or_its_own_plugins(providers):
    missing = []
    for spec, uses in providers["uses"].items():
        for kind, names in uses.items():
            own = set(providers["core"][kind])
            for module in providers["plugins"][spec]:
                own |= set(providers["provides"][module][kind])
            missing += [f"{spec}: {kind} {name!r}" for name in names if name not in own]
    assert not missing, "names not registered by loading the spec alone (list the module under plugins:):\n" + \
        "\n".join(missing)
    assert "gemma4_kv_sharing" in providers["provides"]["gemma4"]["tracing_hint"]
    assert "gemma4_kv_sharing" not in providers["core"]["tracing_hint"]


# A fresh interpreter loads gemma4 first thing, then unpickles a mistral_large4 spec sent by this process.
_FRESH = r"""
import json, pickle, sys

def family_modules():
    return sorted(m for m in sys.modules if m.startswith("tokenprune.model_specs."))

import tokenprune as tp
from tokenprune.plugins import registry

spec = tp.load_spec("gemma4")
loaded = {"modules": family_modules(), "hints": registry("tracing_hint").names(), "uses": spec.tracing.hints}
before = set(family_modules())
pickle.loads(sys.stdin.buffer.read())
unpickled = {"modules": sorted(set(family_modules()) - before), "registered": "mistral_large4" in registry("qk")}
print(json.dumps({"loaded": loaded, "unpickled": unpickled}))
"""


@pytest.fixture(scope="module")
def fresh() -> dict:
    import pickle

    done = subprocess.run([sys.executable, "-c", _FRESH], input=pickle.dumps(tp.load_spec("mistral_large4")),
                          capture_output=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def test_loading_a_spec_first_thing_imports_exactly_its_family_module(fresh):
    assert fresh["loaded"]["modules"] == ["tokenprune.model_specs.gemma4"]
    assert set(fresh["loaded"]["uses"]) <= set(fresh["loaded"]["hints"])
    assert "gemma4_kv_sharing" in fresh["loaded"]["uses"]


def test_a_spec_unpickled_in_another_process_brings_its_family_module(fresh):
    assert fresh["unpickled"] == {"modules": ["tokenprune.model_specs.mistral_large4"], "registered": True}
