"""`train` (and `demo`, the default command): one training run, prepared shards -> Ray Data ->
Ray Train workers -> one MLflow run, with the epoch table and where to open the MLflow UI
(experiments/training_run.py)."""

from __future__ import annotations

from orchestrator.commands import add_config, add_note, add_overrides, load


def add_arguments(parser, default_config=None) -> None:
    add_config(parser, default_config)
    add_overrides(parser)
    add_note(parser)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (workers, data, steps, storage, new run or resume) and stop",
    )


def run(args) -> None:
    config = load(args)
    if args.dry_run:
        from orchestrator.experiments.plan import training_plan

        print("\n".join(training_plan(config)))
        return
    from orchestrator.experiments.training_run import train

    train(config)
