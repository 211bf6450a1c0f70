"""`study`: the paper's ablations (or your own) as one Ray Tune experiment, each against a
baseline over several seeds, summarised against the published numbers (experiments/study.py)."""

from __future__ import annotations

from orchestrator.commands import add_resumable, load
from orchestrator.common.paths import STUDY_CONFIG


def add_arguments(parser) -> None:
    add_resumable(parser, STUDY_CONFIG, "study")


def run(args) -> None:
    """The study's table is printed and logged to its MLflow parent run (`report --study`)."""
    config = load(args)
    if args.dry_run:
        from orchestrator.experiments.plan import experiment_plan
        from orchestrator.experiments.study import check, groups_of

        spec, groups = config.study, groups_of(config)
        check(config, groups)
        trials = f"{len(groups) * spec.seeds} ({len(groups)} groups x {spec.seeds} seeds)"
        lines = experiment_plan(
            config, "study", spec.name, trials, spec.max_concurrent_trials, args.resume
        )
        print("\n".join(lines))
        return
    from orchestrator.experiments.study import study

    study(config, resume=args.resume)
