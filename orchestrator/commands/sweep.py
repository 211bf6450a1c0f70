"""`sweep`: a Ray Tune sweep over config fields, one TorchTrainer per trial, nested MLflow runs
(orchestrator/sweep.py)."""

from __future__ import annotations

from orchestrator.commands import add_config, add_overrides, add_resume, load
from orchestrator.paths import SWEEP_CONFIG


def add_arguments(parser) -> None:
    add_config(parser, SWEEP_CONFIG)
    add_overrides(parser)
    add_resume(
        parser,
        "sweep of this sweep.name: unfinished trials go on, finished ones "
        "are not run again, each keeps its one MLflow run",
    )


def run(args) -> None:
    config = load(args)
    from orchestrator import sweep

    sweep.sweep(config, resume=args.resume)
