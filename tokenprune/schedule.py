"""Per-layer keep-ratio schedules: every method (FastV, PyramidDrop, VTW, searched schedules) reduces to one.

``keep_ratio[l]`` is the fraction of a sample's vision tokens present in the *input* of decoder layer
``l``. A sample with ``N`` vision tokens keeps ``keep_count(r, N) = ceil(r * N)`` of them. A cut sits
before every layer whose ratio drops below the previous layer's; ``keep_ratio[0] < 1`` is a cut before the first
decoder layer (on the projector's output as it enters the language model), where pre-LLM selectors act.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import yaml

from .errors import ScheduleError, describe

# r * N is rounded to this many decimals before ceil, so 0.07 * 100 keeps 7 tokens, not 8.
_ROUND_DECIMALS = 9


def keep_count(ratio: float, num_vision_tokens: int) -> int:
    """Number of vision tokens a sample with ``num_vision_tokens`` keeps at ``ratio``: ``ceil(r*N)``."""
    return int(math.ceil(round(ratio * num_vision_tokens, _ROUND_DECIMALS)))


@dataclass(frozen=True)
class Schedule:
    """A non-increasing list of keep ratios, one per decoder layer (the entering tokens count as ratio 1.0)."""

    keep_ratio: tuple[float, ...]
    name: str = field(default="custom", compare=False)

    def __init__(self, keep_ratio: Sequence[float], name: str = "custom") -> None:
        ratios = _as_ratios(keep_ratio)
        object.__setattr__(self, "keep_ratio", ratios)
        object.__setattr__(self, "name", name)
        self._validate()

    def _validate(self) -> None:
        r = self.keep_ratio
        if len(r) == 0:
            raise ScheduleError(describe("empty schedule", "keep_ratio", "one ratio per decoder layer"))
        for i, value in enumerate(r):
            if not (0.0 <= value <= 1.0) or math.isnan(value):
                raise ScheduleError(
                    describe(f"keep ratio {value!r} out of range", f"keep_ratio[{i}]", "a value in [0, 1]",
                             "use 1.0 to keep every vision token and 0.0 to withdraw them all")
                )
        for i in range(1, len(r)):
            if r[i] > r[i - 1]:
                raise ScheduleError(
                    describe(f"schedule increases from {r[i - 1]!r} to {r[i]!r}", f"keep_ratio[{i}]",
                             "a non-increasing sequence (dropped tokens cannot come back)")
                )

    # ----------------------------------------------------------------- views
    @property
    def num_layers(self) -> int:
        return len(self.keep_ratio)

    @property
    def cuts(self) -> tuple[int, ...]:
        """Layer indices ``l`` before which the ratio drops (the scoring layer is ``l - 1``; a cut at 0 has none)."""
        r = self.keep_ratio
        return tuple(i for i in range(len(r)) if r[i] < (r[i - 1] if i else 1.0))

    def is_keep_all(self) -> bool:
        return not self.cuts

    def keep_counts(self, num_vision_tokens: int) -> list[int]:
        """Vision tokens present in the input of each layer for a sample with ``num_vision_tokens``."""
        return [keep_count(r, num_vision_tokens) for r in self.keep_ratio]

    def check_layers(self, num_layers: int, where: str = "schedule") -> None:
        if self.num_layers != num_layers:
            raise ScheduleError(
                describe(f"schedule has {self.num_layers} entries but the language model has {num_layers} "
                         "decoder layers", where, f"{num_layers} keep ratios, one per decoder layer",
                         f"build it with num_layers={num_layers}")
            )

    # ---------------------------------------------------------- constructors
    @classmethod
    def keep_all(cls, num_layers: int) -> Schedule:
        return cls([1.0] * num_layers, name="keep-all")

    @classmethod
    def fastv(cls, num_layers: int, layer: int = 2, keep: float = 0.5) -> Schedule:
        """FastV(K, R): all tokens before layer ``K``, ``keep = 1 - R`` from layer ``K`` on (``K = 0``: before the
        language model, as pre-LLM selectors prune)."""
        _check_layer_index(layer, num_layers, "layer")
        return cls([1.0 if i < layer else keep for i in range(num_layers)], name=f"fastv(K={layer},keep={keep:g})")

    uniform = fastv

    @classmethod
    def vtw(cls, num_layers: int, layer: int) -> Schedule:
        """VTW(K): every vision token is withdrawn from layer ``K`` on."""
        _check_layer_index(layer, num_layers, "layer")
        return cls([1.0 if i < layer else 0.0 for i in range(num_layers)], name=f"vtw(K={layer})")

    @classmethod
    def pdrop(cls, num_layers: int, layers: Sequence[int] | None = None, ratio: float = 0.5) -> Schedule:
        """PyramidDrop: stage ``s`` (split at ``layers``) keeps ``ratio ** s``.

        The default split for 32 layers is 8, 16, 24; other depths use quarters of the stack.
        """
        if layers is None:
            layers = [num_layers * q // 4 for q in (1, 2, 3)]
        layers = sorted(int(x) for x in layers)
        for x in layers:
            _check_layer_index(x, num_layers, "layers")
        if not (0.0 <= ratio <= 1.0):
            raise ScheduleError(describe(f"ratio {ratio!r} out of range", "pdrop(ratio)", "a value in [0, 1]"))
        ratios = [ratio ** sum(1 for x in layers if i >= x) for i in range(num_layers)]
        return cls(ratios, name=f"pdrop(layers={layers},ratio={ratio:g})")

    @classmethod
    def sigmoid(cls, num_layers: int, k: float, alpha: float, floor: float) -> Schedule:
        """P-Sigmoid: ``r[l] = b + (1 - b) / (1 + exp(k (l - alpha)))`` for ``l >= 1``; ``r[0] = 1``."""
        if k <= 0:
            raise ScheduleError(describe(f"steepness k={k!r}", "sigmoid(k)", "k > 0"))
        if not (0.0 <= floor <= 1.0):
            raise ScheduleError(describe(f"floor {floor!r} out of range", "sigmoid(floor)", "a value in [0, 1]"))
        ratios = [1.0] + [sigmoid_ratio(i, k, alpha, floor) for i in range(1, num_layers)]
        return cls(ratios, name=f"p-sigmoid(k={k:.4g},alpha={alpha:.4g},floor={floor:.4g})")

    # ------------------------------------------------------------- serialise
    def to_dict(self) -> dict:
        return {"name": self.name, "keep_ratio": list(self.keep_ratio)}

    @classmethod
    def from_dict(cls, data: dict) -> Schedule:
        if not isinstance(data, dict) or "keep_ratio" not in data:
            raise ScheduleError(describe("not a schedule mapping", "schedule", "a mapping with a 'keep_ratio' list"))
        unknown = set(data) - {"name", "keep_ratio"}
        if unknown:
            raise ScheduleError(describe(f"unknown keys {sorted(unknown)}", "schedule", "only 'name' and 'keep_ratio'"))
        return cls(data["keep_ratio"], name=data.get("name", "custom"))

    def to_yaml(self) -> str:
        # repr-precision floats survive YAML exactly, so from_yaml(to_yaml(s)) == s.
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> Schedule:
        return cls.from_dict(yaml.safe_load(text))

    def __repr__(self) -> str:
        body = ", ".join(f"{r:.4g}" for r in self.keep_ratio)
        return f"Schedule(name={self.name!r}, keep_ratio=[{body}])"


def _as_ratios(keep_ratio) -> tuple[float, ...]:
    """The ratios as floats, or a ScheduleError naming the accepted forms (a string is not a list of ratios)."""
    forms = ("a sequence of keep ratios such as [1.0, 1.0, 0.5, 0.5], or a constructor such as "
             "Schedule.fastv(num_layers, layer=2, keep=0.5)")
    if isinstance(keep_ratio, (str, bytes)):
        raise ScheduleError(describe(f"Schedule({keep_ratio!r}): a string is not a list of keep ratios",
                                     "Schedule(keep_ratio)", forms,
                                     "read text such as 'fastv:2:0.5' with "
                                     "tokenprune.saving.read_schedule(text, num_layers)"))
    try:
        return tuple(float(r) for r in keep_ratio)
    except (TypeError, ValueError) as err:
        raise ScheduleError(describe(f"Schedule({keep_ratio!r}): {err}", "Schedule(keep_ratio)", forms)) from None


def sigmoid_ratio(layer: float, k: float, alpha: float, floor: float) -> float:
    """The P-Sigmoid curve at ``layer`` (numerically safe for large ``|k (l - alpha)|``)."""
    z = k * (layer - alpha)
    s = 0.0 if z > 700 else 1.0 / (1.0 + math.exp(z))
    return floor + (1.0 - floor) * s


def _check_layer_index(layer: int, num_layers: int, name: str) -> None:
    if not (0 <= layer < num_layers):
        raise ScheduleError(
            describe(f"{name}={layer} is not a layer a cut can sit before", name, f"0 <= {name} < {num_layers}",
                     "0 cuts before the first decoder layer, num_layers - 1 before the last")
        )
