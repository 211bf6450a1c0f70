"""`describe`: the model's layer table: output shape, parameters, multiply-adds per layer."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from orchestrator.commands import add_config, add_overrides, load

if TYPE_CHECKING:
    from orchestrator.config.experiment import ExperimentConfig


def add_arguments(parser) -> None:
    add_config(parser, None)
    add_overrides(parser)


def run(args) -> None:
    describe(load(args))


def describe(config: ExperimentConfig) -> None:
    """Print the model's layer table: output shape, parameters, multiply-adds per layer."""
    from workloads.alexnet.model import build_model  # the table is measured on the module
    from workloads.alexnet.summary import format_table, layer_table

    model_config = config.model.resolved()
    model = build_model(model_config)
    settings = ", ".join(
        f"{f.name}={getattr(model_config, f.name)}" for f in dataclasses.fields(model_config)
    )
    print(f"AlexNet({settings})\n")
    print(
        format_table(
            layer_table(model, model_config.input_size), sum(p.numel() for p in model.parameters())
        )
    )
