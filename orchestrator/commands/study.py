"""`study`: the paper's ablations (or your own) as one Ray Tune experiment, each against a
baseline over several seeds, summarised against the published numbers (orchestrator/study.py)."""

from __future__ import annotations

from orchestrator.commands import add_config, add_overrides, add_resume, load
from orchestrator.paths import STUDY_CONFIG


def add_arguments(parser) -> None:
    add_config(parser, STUDY_CONFIG)
    add_overrides(parser)
    add_resume(
        parser,
        "study of this study.name: unfinished trials go on from their "
        "checkpoints, finished ones are not run again",
    )


def run(args) -> None:
    config = load(args)
    from orchestrator import study

    study.study(config, resume=args.resume)
