"""`sweep`: a Ray Tune sweep over config fields, one TorchTrainer per trial, nested MLflow runs
(experiments/sweep.py)."""

from __future__ import annotations

from orchestrator.commands import add_resumable, load
from orchestrator.common.paths import SWEEP_CONFIG


def add_arguments(parser) -> None:
    add_resumable(parser, SWEEP_CONFIG, "sweep")


def run(args) -> None:
    config = load(args)  # a bad config fails here, before Ray is imported
    if args.dry_run:
        from orchestrator.experiments.plan import experiment_plan
        from orchestrator.experiments.search import trial_count
        from orchestrator.experiments.sweep import check

        spec = config.sweep
        check(config)
        trials = f"{trial_count(spec)} ({spec.search} search, {spec.scheduler} scheduler)"
        lines = experiment_plan(
            config, "sweep", spec.name, trials, spec.max_concurrent_trials, args.resume
        )
        print("\n".join(lines))
        return
    from orchestrator.experiments.sweep import sweep

    sweep(config, resume=args.resume)
