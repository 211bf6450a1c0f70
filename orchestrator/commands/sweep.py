"""`sweep`: a Ray Tune sweep over config fields, one TorchTrainer per trial, nested MLflow runs
(experiments/sweep.py)."""

from __future__ import annotations

from orchestrator.commands import add_resumable, load
from orchestrator.common.paths import SWEEP_CONFIG


def add_arguments(parser) -> None:
    add_resumable(parser, SWEEP_CONFIG, "sweep")


def run(args) -> None:
    config = load(args)  # a bad config fails here, before Ray is imported
    from orchestrator.experiments.sweep import sweep

    sweep(config, resume=args.resume)
