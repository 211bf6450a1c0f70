"""The subcommands of `orchestrator/run.py`: one module each, holding its arguments
(`add_arguments`) and what it does (`run`), which loads the config and calls one function of
the layers below. run.py imports only the module of the command it runs, so `--help` imports
none of them. A command module imports the layers below inside `run` (the one place this
project imports its own modules in a function), after the config is loaded: `<command> --help`
and a config error cost neither torch nor Ray nor MLflow."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from orchestrator.common.paths import config_path, shipped_configs


def add_config(parser: argparse.ArgumentParser, default: Path | None) -> None:
    shown = default.stem if default else "the built-in paper recipe"
    help_text = (
        f"YAML experiment config: a file, or a shipped one by name ({', '.join(shipped_configs())}"
        f"; in orchestrator/configs/); default: {shown}"
    )
    parser.add_argument("--config", type=config_path, default=default, help=help_text)


def add_resumable(parser: argparse.ArgumentParser, default: Path, kind: str) -> None:
    """--config (default `default`), --set and --resume, for a Ray Tune experiment (`kind`:
    sweep or study) that an interrupted run continues."""
    add_config(parser, default)
    add_overrides(parser)
    add_note(parser)
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"continue the interrupted {kind} of this {kind}.name: finished trials are not run "
        "again, unfinished ones go on from their checkpoints, each keeps its one MLflow run",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=f"print the {kind}'s plan (trials, their CPUs, data, state, MLflow) and stop",
    )


def add_overrides(parser: argparse.ArgumentParser) -> None:
    overrides = parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config field, e.g. --set model.dropout=0.3 --set train.epochs=5 "
        "(repeatable; the value is parsed as YAML)",
    )
    overrides.completer = config_keys  # shell completion (argcomplete)


def config_keys(prefix: str, **_) -> list[str]:
    """`--set`'s completions: every config key that starts with `prefix`, as `key=`."""
    from orchestrator.config.fields import reference

    return [f"{field.key}=" for field in reference() if field.key.startswith(prefix)]


def add_note(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--note",
        help="a description of the run(s), shown in MLflow's UI (the same as "
        "--set tracking.note=TEXT, taken as plain text)",
    )


MODEL_HELP = (
    "a checkpoint folder or checkpoint.pt written by train, runs:/<MLflow run id> for that run's "
    "last checkpoint, or models:/<name>@<alias> for a model a sweep registered; its config comes "
    "with it"
)


def add_model(parser: argparse.ArgumentParser) -> None:
    """--model: a trained model (analysis/trained.py opens it)."""
    parser.add_argument("--model", required=True, help=MODEL_HELP)


def load(args: argparse.Namespace):
    """The command's validated config: `--config` with the `--set` overrides."""
    from orchestrator.config.experiment import load_config

    overrides = list(args.overrides)
    if getattr(args, "note", None):
        overrides.append(f"tracking.note={json.dumps(args.note)}")  # JSON: YAML, as typed
    return load_config(args.config, overrides)
