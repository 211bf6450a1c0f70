"""The subcommands of `orchestrator/run.py`: one module each, holding its arguments
(`add_arguments`) and what it does (`run`). run.py imports only the module of the command it
runs, so `--help` imports none of them. A command module imports torch, Ray and the modules
that need them (launch, cluster, sweep, checkpoints, the model) inside the function that uses
them, after the config is loaded: `<command> --help` and a config error cost neither."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.paths import REPO_ROOT


def add_config(parser: argparse.ArgumentParser, default: Path | None) -> None:
    shown = default.relative_to(REPO_ROOT) if default else "the built-in paper recipe"
    help_text = f"YAML experiment config (default: {shown}); see configs/"
    parser.add_argument("--config", type=Path, default=default, help=help_text)


def add_resume(parser: argparse.ArgumentParser, what: str) -> None:
    """--resume: continue the interrupted experiment (`what` says what that means)."""
    parser.add_argument("--resume", action="store_true", help=f"continue the interrupted {what}")


def add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config field, e.g. --set model.dropout=0.3 --set train.epochs=5 "
        "(repeatable; the value is parsed as YAML)",
    )


def load(args: argparse.Namespace):
    """The command's validated config: `--config` with the `--set` overrides."""
    from orchestrator.config import load_config

    return load_config(args.config, args.overrides)
