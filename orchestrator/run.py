# PYTHON_ARGCOMPLETE_OK  (shell completion: docs/getting-started.md)
"""AlexNet on Ray: `python orchestrator/run.py [command] [--config YAML] [--set key=value ...]`.

With no command it runs the demo: a CPU-sized AlexNet trained on a generated dataset by two Ray
Train workers fed by Ray Data, tracked in MLflow (a sqlite store in the working directory).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script (also as a `ray job submit` entrypoint)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Only light imports here: `--help` must not wait for torch and Ray (commands import them)
from orchestrator.common import logs  # noqa: E402
from orchestrator.common.console import quiet_ray_console  # noqa: E402
from orchestrator.common.errors import MAX_MESSAGE_CHARS, ConfigError  # noqa: E402
from orchestrator.common.logs import LEVELS  # noqa: E402
from orchestrator.common.redact import redact_text  # noqa: E402
from orchestrator.common.source import git_state  # noqa: E402

# name: (its module in orchestrator/commands/, help). Each module declares its arguments and runs.
COMMANDS = {
    "demo": "train the CPU-sized demo config on a generated dataset (default)",
    "train": "one training run: Ray Data -> Ray Train -> one MLflow run",
    "prepare": "decode a raw image tree once into Parquet shards + statistics",
    "sweep": "a Ray Tune sweep: one TorchTrainer per trial, nested MLflow runs",
    "study": "ablations against a baseline over seeds, compared with the paper's numbers",
    "report": "a sweep's trials (best first) or a study's table, from MLflow",
    "evaluate": "top-1/top-5 error of a checkpoint, centre crop or ten-crop",
    "figures": "the paper's figures for a checkpoint: kernels, top-5, neighbours, confusion",
    "neighbors": "the training images nearest to your images in a model's fc7 space",
    "describe": "print the layer table: output shapes, params, multiply-adds",
    "config": "print the resolved config (--config, --set), or every field (--fields)",
    "capacity": "CPU cores a GPU node needs so the data feed keeps up",
    "serve": "a trained model as an HTTP service on Ray Serve: POST an image, get its top-k",
    "predict": "a model's top-k for every image of a folder or bucket, with Ray Data, to Parquet",
    "export": "a trained model as one ONNX (checked with ONNX Runtime) or pt2 file",
    "submit": "run a command as a Ray job on a cluster, from this checkout, with its commit",
}

TRACKED = ("demo", "train", "sweep", "study", "evaluate", "prepare")  # commands with MLflow runs


def command_module(name: str):
    return importlib.import_module(f"orchestrator.commands.{name}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    lead = _log_level_options(argv)  # -q, -v, --log-level X may come before the command
    rest = argv[lead:]
    if not rest or (rest[0].startswith("-") and rest[0] not in ("-h", "--help", "--version")):
        argv = [*argv[:lead], "demo", *rest]  # bare `run.py [--set ...]` is the demo
    return build_parser(argv[lead]).parse_args(argv)


def _log_level_options(argv: list[str]) -> int:
    """How many of `argv`'s first words are log-level options."""
    lead = 0
    while lead < len(argv):
        if argv[lead] in ("-v", "--verbose", "-q", "--quiet") or argv[lead].startswith(
            "--log-level="
        ):
            lead += 1
        elif argv[lead] == "--log-level":
            lead += 2
        else:
            break
    return min(lead, len(argv))


def build_parser(command: str) -> argparse.ArgumentParser:
    """Every command's parser, with the arguments of `command` alone: only the command that
    runs imports its module."""
    parser = argparse.ArgumentParser(
        prog=Path(sys.argv[0]).name
        if sys.argv[0].endswith("alexnet-ray")
        else "orchestrator/run.py",
        description=__doc__.split("\n\n")[0],
        epilog="`orchestrator/run.py <command> --help` describes each command's options.",
    )
    parser.add_argument(
        "--version", action="store_true", help="print the versions (package, commit, engines)"
    )
    add_log_level(parser, argparse.SUPPRESS)
    subparsers = parser.add_subparsers(dest="command", metavar="command")
    for name, help_text in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        add_log_level(sub, argparse.SUPPRESS)  # before or after the command
        if name == command:
            command_module(name).add_arguments(sub)
    return parser


def add_log_level(parser: argparse.ArgumentParser, default) -> None:
    levels = parser.add_mutually_exclusive_group()
    levels.add_argument(
        "--log-level",
        choices=sorted(LEVELS, key=LEVELS.get),
        default=default,
        help="how much of the diagnostics (stderr) to show (default: info); results go to "
        "stdout at any level; Ray's own lines follow a step quieter",
    )
    levels.add_argument(
        "-v",
        "--verbose",
        action="store_const",
        const="debug",
        dest="log_level",
        default=default,
        help="--log-level debug: every diagnostic, and Ray's INFO lines",
    )
    levels.add_argument(
        "-q",
        "--quiet",
        action="store_const",
        const="warning",
        dest="log_level",
        default=default,
        help="--log-level warning: results, warnings and errors only",
    )


def complete() -> None:
    """Shell completion (argcomplete): the commands, their options, and every config key after
    `--set`. Called with the shell's line in COMP_LINE; prints the candidates and exits."""
    import argcomplete

    line = os.environ.get("COMP_LINE", "")[: int(os.environ.get("COMP_POINT", "0") or 0)]
    command = next((word for word in line.split()[1:] if word in COMMANDS), "demo")
    argcomplete.autocomplete(build_parser(command))


def versions() -> str:
    """This package's version and commit, and those of the engines it runs on (read from the
    installed packages' metadata: nothing heavy is imported)."""
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    parts = [f"{name} {version(name)}" for name in ("ray", "torch", "mlflow")]
    return f"alexnet-ray {version('alexnet-ray')} ({git_commit()}); {', '.join(parts)}"


def git_commit() -> str:
    """The checkout's commit (with `+dirty` for uncommitted changes), or 'no git checkout'."""
    commit, _, dirty = git_state(Path(__file__).resolve().parent.parent)
    return f"{commit[:12]}{'+dirty' if dirty else ''}" if commit else "no git checkout"


def main(argv: list[str] | None = None) -> int:
    if "_ARGCOMPLETE" in os.environ and argv is None:
        complete()
    quiet_ray_console()  # before any command imports Ray
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.version:
        print(versions())
        return 0
    logs.configure(getattr(args, "log_level", None) or "info")
    try:
        # a command that tracks a run keeps what its console showed as the run's console.log
        copy = logs.console_copy() if args.command in TRACKED else contextlib.nullcontext()
        with copy:
            status = command_module(args.command).run(args)  # None, or an exit status
    except ConfigError as error:
        print(f"{error.prefix}: {one_line(str(error))}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError) as error:
        # A path the user gave that is missing or closed to us, found only while working
        print(f"error: {one_line(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as error:  # Ctrl-C: what was kept is said, no traceback
        print(one_line(str(error)) or "interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug, or a failure nobody foresaw: the traceback, with secrets masked
        print(redact_text(traceback.format_exc()), file=sys.stderr, end="")
        return 1
    return status or 0


def one_line(message: str) -> str:
    """A message fit for the console: secrets masked, one line, at most MAX_MESSAGE_CHARS."""
    text = " ".join(redact_text(message).split())
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 20] + f" ... ({len(text)} chars)"
    return text


if __name__ == "__main__":
    sys.exit(main())
