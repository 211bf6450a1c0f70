"""The layer table of a model: output shape, parameters and multiply-adds per layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

_SHOWN = (nn.Conv2d, nn.Linear, nn.LocalResponseNorm, nn.MaxPool2d, nn.AdaptiveAvgPool2d)
_PREFIX = {nn.Conv2d: "conv", nn.Linear: "fc", nn.LocalResponseNorm: "lrn", nn.MaxPool2d: "pool"}


@dataclass(frozen=True)
class LayerRow:
    name: str  # paper name: conv1..conv5, lrn1, pool1, fc6..fc8
    module: str  # state-dict path, e.g. features.0
    output_shape: tuple[int, ...]  # per image (C, H, W) or (F,)
    params: int
    macs: int  # multiply-adds per image
    spec: str  # kernel / width / constants, e.g. "256x5x5x48 /1 pad 2, groups=2"


def _macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-adds per image of conv and fc layers (the rest are counted as zero)."""
    if isinstance(module, nn.Conv2d):
        per_output = (
            module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        )
        return output[0].numel() * per_output
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return 0


def _describe(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        groups = f", groups={module.groups}" if module.groups > 1 else ""
        k, s, p = module.kernel_size[0], module.stride[0], module.padding[0]
        kernel = f"{module.out_channels}x{k}x{k}x{module.in_channels // module.groups}"
        return f"{kernel} /{s} pad {p}{groups}"
    if isinstance(module, nn.Linear):
        return f"{module.in_features} -> {module.out_features}"
    if isinstance(module, nn.LocalResponseNorm):
        towers = getattr(module, "towers", 1)
        within = f", within each of {towers} towers" if towers > 1 else ""
        return f"n={module.size} alpha={module.alpha} beta={module.beta} k={module.k}{within}"
    if isinstance(module, nn.MaxPool2d):
        return f"max {module.kernel_size}/{module.stride}"
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return f"adaptive avg -> {module.output_size}"
    return type(module).__name__


def layer_table(model: nn.Module, input_size: int) -> list[LayerRow]:
    """Run one image of `input_size` through `model` on the CPU and record every shown layer."""
    rows: list[LayerRow] = []
    counters: dict[str, int] = {}
    hooks = []

    def hook(name):
        def record(module, inputs, output):
            prefix = next((p for t, p in _PREFIX.items() if isinstance(module, t)), "avgpool")
            if prefix == "avgpool":
                label = "avgpool"
            else:
                counters[prefix] = counters.get(prefix, 0) + 1
                if prefix in ("lrn", "pool"):  # numbered after the conv they follow: pool5
                    label = f"{prefix}{counters.get('conv', 0)}"
                else:  # conv1..conv5, fc6..fc8
                    label = f"{prefix}{counters[prefix] + (5 if prefix == 'fc' else 0)}"
            params = sum(p.numel() for p in module.parameters(recurse=False))
            shape = tuple(output.shape[1:])
            rows.append(
                LayerRow(label, name, shape, params, _macs(module, output), _describe(module))
            )

        return record

    for name, module in model.named_modules():
        if isinstance(module, _SHOWN):
            hooks.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return rows


def format_table(rows: list[LayerRow], total_params: int) -> str:
    header = f"{'layer':<8} {'module':<14} {'output':<16} {'params':>12} {'mult-adds':>14}  spec"
    lines = [header, "-" * len(header)]
    for row in rows:
        shape = "x".join(str(d) for d in row.output_shape)
        lines.append(
            f"{row.name:<8} {row.module:<14} {shape:<16} {row.params:>12,} {row.macs:>14,}  "
            f"{row.spec}"
        )
    total_macs = sum(row.macs for row in rows)
    lines.append("-" * len(header))
    lines.append(f"{'total':<8} {'':<14} {'':<16} {total_params:>12,} {total_macs:>14,}")
    lines.append(
        f"parameters: {total_params:,}   multiply-adds per image: {total_macs / 1e9:.3f} G"
    )
    return "\n".join(lines)
