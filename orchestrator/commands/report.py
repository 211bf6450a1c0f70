"""`report`: a sweep's trials from MLflow, best first, and the paths of its plots; or a
study's table against the published numbers."""

from __future__ import annotations

from orchestrator.commands import add_config, add_overrides, load


def add_arguments(parser) -> None:
    add_config(parser, None)
    add_overrides(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--sweep", help="the sweep.name to report")
    which.add_argument("--study", help="the study.name to report")


def run(args) -> None:
    config = load(args)
    if args.sweep is not None:
        from orchestrator.experiments import sweep_results

        sweep_results.report(config, args.sweep)
    else:
        from orchestrator.experiments import study

        study.report(config, args.study)
