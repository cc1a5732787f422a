"""Save a compiled model's pruning setup next to a checkpoint and re-apply it on load.

The setup is a small YAML file, ``tokenprune.yaml``, written beside ``config.json``::

    format: 1
    tokenprune_version: 0.1.0
    spec: llava                  # a bundled spec's name, or the whole spec as a mapping
    schedule: {name: ..., keep_ratio: [...]}
    scorer: last-token-attention
    seed: 0

Weights are never touched: ``save_pruned(model, dir)`` writes the file (and, with ``save_model=True``,
the original model's ``save_pretrained`` output); ``load_pruned(dir)`` loads the checkpoint with
``from_pretrained`` and compiles it again. The same module reads schedules from text and files for the
command line and the lmms-eval plug-in (:func:`read_schedule`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ScheduleError, SpecError, describe
from .schedule import Schedule
from .spec import ModelSpec, bundled_spec_names, load_spec, spec_from_dict

FILE_NAME = "tokenprune.yaml"
FORMAT_VERSION = 1
_KEYS = {"format", "tokenprune_version", "spec", "schedule", "scorer", "seed"}


@dataclass(frozen=True)
class PruningSetup:
    """Everything ``tokenprune.compile`` needs besides the model itself."""

    spec: ModelSpec
    schedule: Schedule
    scorer: str = "last-token-attention"
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        from .version import __version__

        return {"format": FORMAT_VERSION, "tokenprune_version": __version__, "spec": _spec_entry(self.spec),
                "schedule": self.schedule.to_dict(), "scorer": self.scorer, "seed": self.seed}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> PruningSetup:
        if not isinstance(data, dict):
            raise SpecError(describe(f"{source} holds a {type(data).__name__}", source, "a YAML mapping"))
        unknown = set(data) - _KEYS
        if unknown:
            raise SpecError(describe(f"unknown keys {sorted(unknown)}", source, f"only {sorted(_KEYS)}"))
        for key in ("spec", "schedule"):
            if key not in data:
                raise SpecError(describe(f"missing key {key!r}", source, "a saved tokenprune setup"))
        if data.get("format", FORMAT_VERSION) != FORMAT_VERSION:
            raise SpecError(describe(f"format {data['format']!r}", f"{source}: format", f"{FORMAT_VERSION}",
                                     "upgrade tokenprune to read this file"))
        raw = data["spec"]
        if isinstance(raw, dict):
            # Files saved while specs held their test data inline carry it; a loaded pruned model never uses it.
            raw = {key: value for key, value in raw.items() if key != "test_model"}
        spec = spec_from_dict(raw, f"{source}: spec") if isinstance(raw, dict) else load_spec(str(raw))
        return cls(spec=spec, schedule=Schedule.from_dict(data["schedule"]),
                   scorer=str(data.get("scorer", "last-token-attention")), seed=int(data.get("seed", 0)))

    @classmethod
    def from_model(cls, model) -> PruningSetup:
        """The setup of a model returned by ``tokenprune.compile``."""
        from .rewrite import session_of

        session = session_of(model)
        return cls(spec=session.spec, schedule=session.schedule, scorer=session.plugins.scorer_name, seed=session.seed)

    def apply(self, model, **compile_kwargs):
        """Compile ``model`` with this setup."""
        from .api import compile as tp_compile

        return tp_compile(model, self.spec, self.schedule, scorer=self.scorer, seed=self.seed, **compile_kwargs)


def _spec_entry(spec: ModelSpec) -> str | dict:
    """A bundled spec by name when it is exactly the bundled one, otherwise the whole spec."""
    if spec.name in bundled_spec_names() and load_spec(spec.name) == spec:
        return spec.name
    return spec.model_dump(mode="json", exclude_defaults=True)


def save_pruned(model, directory: str | Path, *, save_model: bool = False, **save_kwargs) -> Path:
    """Write ``tokenprune.yaml`` for a compiled model into ``directory`` and return its path.

    With ``save_model=True`` the weights and config are saved too (``save_pretrained`` of the compiled
    model, which shares parameters with the original and has the same ``state_dict`` keys).
    """
    setup = PruningSetup.from_model(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if save_model:
        model.save_pretrained(directory, **save_kwargs)
    path = directory / FILE_NAME
    path.write_text(setup.to_yaml())
    return path


def read_setup(path: str | Path) -> PruningSetup:
    """Read a saved setup from ``tokenprune.yaml`` or from the directory holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE_NAME
    if not path.is_file():
        raise SpecError(describe(f"no {FILE_NAME} at {str(path)!r}", "read_setup", "a file written by save_pruned",
                                 "compile the model and call tokenprune.save_pruned(model, directory)"))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(describe(f"YAML syntax error: {err}", str(path), "valid YAML")) from None
    return PruningSetup.from_dict(data, str(path))


def load_pruned(directory: str | Path, model_cls=None, *, setup: str | Path | None = None,
                trust_remote_code: bool = False, **from_pretrained_kwargs):
    """Load the checkpoint in ``directory`` and re-apply its saved pruning setup.

    ``model_cls`` defaults to the class named by the checkpoint's ``config.architectures`` (a transformers
    class, or with ``trust_remote_code=True`` the checkpoint's own code listed in ``auto_map``);
    ``setup`` is another ``tokenprune.yaml`` to apply instead of the one in ``directory``.
    Keyword arguments go to ``from_pretrained`` (e.g. ``dtype=torch.bfloat16``, ``attn_implementation``).
    """
    pruning = read_setup(setup if setup is not None else directory)
    if model_cls is None:
        model_cls = model_class_for(directory, trust_remote_code=trust_remote_code)
    if trust_remote_code:
        from_pretrained_kwargs["trust_remote_code"] = True
    model = model_cls.from_pretrained(directory, **from_pretrained_kwargs).eval()
    return pruning.apply(model)


def model_class_for(directory: str | Path, trust_remote_code: bool = False):
    """The model class named first in a checkpoint's ``config.architectures``.

    A transformers class is imported from transformers. A class that only the checkpoint's own code defines
    (``auto_map`` in ``config.json``) is imported from the directory, which runs that code: it needs
    ``trust_remote_code=True``.
    """
    import transformers

    config = _read_config(directory, trust_remote_code)
    names = list(getattr(config, "architectures", None) or [])
    for name in names:
        if hasattr(transformers, name):
            return getattr(transformers, name)
    auto_map = getattr(config, "auto_map", None) or {}
    for name in names:
        for reference in auto_map.values():
            if isinstance(reference, str) and reference.rsplit(".", 1)[-1] == name:
                if not trust_remote_code:
                    raise SpecError(_remote_code_message(directory))
                from transformers.dynamic_module_utils import get_class_from_dynamic_module

                return get_class_from_dynamic_module(reference, str(directory))
    raise SpecError(describe(f"cannot tell the model class of {str(directory)!r} (architectures={names})",
                             "config.json: architectures", "a transformers class name, or a class of the "
                             "checkpoint's own code listed in auto_map", "pass model_cls= explicitly"))


def _read_config(directory: str | Path, trust_remote_code: bool):
    import transformers

    try:
        return transformers.AutoConfig.from_pretrained(directory, trust_remote_code=trust_remote_code)
    except ValueError as err:  # transformers refuses custom code that was not trusted with a ValueError
        if not trust_remote_code and "trust_remote_code" in str(err):
            raise SpecError(_remote_code_message(directory)) from None
        raise


def _remote_code_message(directory: str | Path) -> str:
    return describe(f"the model in {str(directory)!r} uses its own code (auto_map in config.json)",
                    "config.json: auto_map", "trust to run the Python files shipped with the checkpoint",
                    "read them, then pass --trust-remote-code (in Python: trust_remote_code=True)")


# ----------------------------------------------------------- schedules from text and files
def read_schedule(text: str | Path, num_layers: int | None = None) -> Schedule:
    """A schedule from a short description or a file.

    Descriptions (``num_layers`` required): ``keep-all``, ``fastv:K:KEEP``, ``vtw:K``, ``pdrop:RATIO`` or
    ``pdrop:L1,L2,L3:RATIO``, ``sigmoid:K:ALPHA:FLOOR``, or the ratios themselves ``1,1,0.5,0.5,...``.
    Files: a schedule YAML (``Schedule.to_yaml``), a saved search result, or a ``tokenprune.yaml``.
    """
    raw = str(text).strip()
    path = Path(raw)
    if raw.endswith((".yaml", ".yml", ".json")) or path.is_dir() or (path.is_file() and ":" not in raw):
        return _schedule_from_file(path)
    head, _, rest = raw.partition(":")
    args = [a for a in rest.split(":")] if rest else []
    method = head.lower()
    if method in ("keep-all", "keepall", "none"):
        return Schedule.keep_all(_need_layers(num_layers, raw))
    if ":" not in raw and ("," in raw or _is_number(raw)):
        try:
            ratios = [float(x) for x in raw.split(",") if x.strip()]
        except ValueError:
            raise ScheduleError(describe(f"cannot read schedule {raw!r}", "schedule", _FORMS)) from None
        return Schedule(ratios)  # its own ScheduleError says which ratio is wrong and why
    n = _need_layers(num_layers, raw)
    try:
        if method == "fastv":
            return Schedule.fastv(n, layer=int(args[0]) if args else 2, keep=float(args[1]) if len(args) > 1 else 0.5)
        if method == "vtw":
            return Schedule.vtw(n, layer=int(args[0]))
        if method in ("pdrop", "pyramiddrop"):
            layers = [int(x) for x in args[0].split(",")] if len(args) > 1 else None
            return Schedule.pdrop(n, layers, ratio=float(args[-1]) if args else 0.5)
        if method in ("sigmoid", "p-sigmoid"):
            k, alpha, floor = (float(a) for a in args)
            return Schedule.sigmoid(n, k=k, alpha=alpha, floor=floor)
    except (IndexError, ValueError) as err:
        if isinstance(err, ScheduleError):
            raise
        raise ScheduleError(describe(f"cannot read schedule {raw!r} ({err})", "schedule", _FORMS)) from None
    raise ScheduleError(describe(f"unknown schedule {raw!r}", "schedule", _FORMS))


_FORMS = ("'keep-all', 'fastv:K:KEEP', 'vtw:K', 'pdrop:RATIO', 'pdrop:L1,L2:RATIO', 'sigmoid:K:ALPHA:FLOOR', "
          "comma-separated ratios, or a YAML file (schedule, search result or tokenprune.yaml)")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _need_layers(num_layers: int | None, raw: str) -> int:
    if num_layers is None:
        raise ScheduleError(describe(f"schedule {raw!r} needs the number of decoder layers", "read_schedule",
                                     "num_layers=", "pass the model, or write the ratios out"))
    return num_layers


def _schedule_from_file(path: Path) -> Schedule:
    return read_schedule_file(path)[0]


def read_schedule_file(path: str | Path) -> tuple[Schedule, str | None]:
    """The schedule in a file and the scorer it was saved with (None: the file names none).

    A ``tokenprune.yaml`` setup (or its directory) names its scorer; a saved search result names the selector
    its search chose, when it chose one; a schedule YAML names none.
    """
    path = Path(path)
    if path.is_dir():
        setup = read_setup(path)
        return setup.schedule, setup.scorer
    if not path.is_file():
        raise ScheduleError(describe(f"schedule file {str(path)!r} not found", "schedule", "an existing file"))
    try:
        data = yaml.safe_load(path.read_text())  # JSON is YAML too
    except yaml.YAMLError as err:
        raise ScheduleError(describe(f"YAML syntax error: {err}", str(path), "valid YAML")) from None
    if isinstance(data, dict) and "spec" in data and "schedule" in data:
        setup = PruningSetup.from_dict(data, str(path))
        return setup.schedule, setup.scorer
    if isinstance(data, dict) and isinstance(data.get("schedule"), dict):  # a saved search result
        return Schedule.from_dict(data["schedule"]), data.get("selector")
    if isinstance(data, dict) and "keep_ratio" in data and set(data) <= {"name", "keep_ratio"}:
        return Schedule.from_dict(data), None
    raise ScheduleError(describe(f"{str(path)!r} holds no schedule{_keys_hint(data)}", "schedule file",
                                 "a schedule YAML (keys 'keep_ratio' and optional 'name'), a saved search result "
                                 "(a 'schedule' mapping) or a tokenprune.yaml ('spec' and 'schedule')"))


_SCHEDULE_FILE_KEYS = ["keep_ratio", "name", "schedule", "spec"]


def _keys_hint(data: Any) -> str:
    """What a schedule file holds instead, and the expected key each unknown one most resembles."""
    if not isinstance(data, dict):
        return f": it holds a {type(data).__name__}, not a mapping"
    keys = [str(k) for k in data]
    guesses = [f"{k!r} -> {near[0]!r}" for k in keys if k not in _SCHEDULE_FILE_KEYS
               for near in [difflib.get_close_matches(k, _SCHEDULE_FILE_KEYS, n=1)] if near]
    hint = f"; did you mean {', '.join(guesses)}?" if guesses else ""
    return f": its keys are {keys}{hint}"
