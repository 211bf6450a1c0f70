"""`report`: a sweep's trials from MLflow, best first, and the paths of its plots."""

from __future__ import annotations

from orchestrator import sweep_results
from orchestrator.commands import add_config, add_overrides, load


def add_arguments(parser) -> None:
    add_config(parser, None)
    add_overrides(parser)
    parser.add_argument("--sweep", required=True, help="the sweep.name to report")


def run(args) -> None:
    sweep_results.report(load(args), args.sweep)
