"""Device maps for loading a model with some decoder layers offloaded (tests, docs, ``tokenprune validate``)."""

from __future__ import annotations

import torch

from tokenprune.spec import ModelSpec, resolve_module


def layer_offload_map(model: torch.nn.Module, spec: ModelSpec, offloaded: str = "disk", fraction: float = 0.5,
                      device: str = "cpu") -> dict[str, str]:
    """An accelerate ``device_map`` for ``model``: the last ``fraction`` of the decoder layers on ``offloaded``
    (``"disk"`` or ``"cpu"``), every other module on ``device``. Keys are module names, one per decoder layer."""
    layers_name = f"{spec.language_model}.{spec.decoder_layers}"
    layers = resolve_module(model, layers_name, "decoder layers")
    first_offloaded = len(layers) - int(len(layers) * fraction)
    device_map: dict[str, str] = {}

    def visit(module: torch.nn.Module, name: str) -> None:
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if full == layers_name:
                device_map.update({f"{full}.{i}": offloaded if i >= first_offloaded else device
                                   for i in range(len(layers))})
            elif layers_name.startswith(full + "."):
                visit(child, full)
            else:
                device_map[full] = device

    visit(model, "")
    return device_map
