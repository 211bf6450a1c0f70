"""AlexNet on Ray: `python orchestrator/run.py [command] [--config YAML] [--set key=value ...]`.

With no command it runs the demo: a CPU-sized AlexNet trained on a generated dataset by two Ray
Train workers fed by Ray Data, tracked in MLflow (./mlflow.db).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script (also as a `ray job submit` entrypoint)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Only light imports here: `--help` must not wait for torch and Ray (commands import them)
from orchestrator.capacity import MEASURED_FEED_PER_CORE  # noqa: E402
from orchestrator.errors import MAX_MESSAGE_CHARS, ConfigError  # noqa: E402
from orchestrator.paths import DEMO_CONFIG, REPO_ROOT, SWEEP_CONFIG  # noqa: E402
from orchestrator.redact import redact_text  # noqa: E402

COMMANDS = {  # name: (function in orchestrator/commands.py, help)
    "demo": ("train", "train the CPU-sized demo config on a generated dataset (default)"),
    "train": ("train", "one training run: Ray Data -> Ray Train -> one MLflow run"),
    "prepare": ("prepare", "decode a raw image tree once into Parquet shards + statistics"),
    "sweep": ("sweep", "a Ray Tune sweep: one TorchTrainer per trial, nested MLflow runs"),
    "report": ("report", "a sweep's trials from MLflow, best first, and its plots"),
    "evaluate": ("evaluate", "top-1/top-5 error of a checkpoint, centre crop or ten-crop"),
    "describe": ("describe", "print the layer table: output shapes, params, multiply-adds"),
    "capacity": ("capacity", "CPU cores a GPU node needs so the data feed keeps up"),
}
PREPARE_OPTIONS = {
    "--source": "imagefolder (train/<class>/*, val/<class>/*) or imagenet (ILSVRC-2012 layouts)",
    "--root": "the raw dataset folder",
    "--out": "where to write the shards: a folder or a pyarrow filesystem URI (s3://, gs://)",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="orchestrator/run.py",
        description=__doc__.split("\n\n")[0],
        epilog="`orchestrator/run.py <command> --help` describes each command's options.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="command")
    for name, (_, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == "evaluate":
            sub.add_argument(
                "--model",
                required=True,
                help="a checkpoint folder or checkpoint.pt written by train, runs:/<MLflow "
                "run id> for that run's last checkpoint, or models:/<name>@<alias> for a model a "
                "sweep registered; its config comes with it",
            )
            sub.add_argument(
                "--ten-crop", action="store_true", help="also the paper's ten-crop test"
            )
        else:
            default = {"demo": DEMO_CONFIG, "sweep": SWEEP_CONFIG}.get(name)
            shown = default.relative_to(REPO_ROOT) if default else "the built-in paper recipe"
            sub.add_argument(
                "--config",
                type=Path,
                default=default,
                help=f"YAML experiment config (default: {shown}); see configs/",
            )
        sub.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override one config field, e.g. --set model.dropout=0.3 --set train.epochs=5 "
            "(repeatable; the value is parsed as YAML)",
        )
        if name == "prepare":
            for option, option_help in PREPARE_OPTIONS.items():
                sub.add_argument(option, help=f"{option_help} (prepare.{option[2:]})")
        if name == "sweep":
            sub.add_argument(
                "--resume",
                action="store_true",
                help="continue the interrupted sweep of this sweep.name: unfinished trials go on, "
                "finished ones are not run again, each keeps its one MLflow run",
            )
        if name == "report":
            sub.add_argument("--sweep", required=True, help="the sweep.name to report")
        if name == "capacity":
            sub.add_argument(
                "--gpu-images-per-second",
                type=float,
                required=True,
                help="the training throughput of one GPU (benchmarks/gpu_throughput.py)",
            )
            sub.add_argument("--gpus-per-node", type=int, default=1)
            sub.add_argument(
                "--feed-per-core",
                type=float,
                default=MEASURED_FEED_PER_CORE,
                help="images/s one core decodes and delivers (benchmarks/"
                f"data_pipeline.py (b); default: {MEASURED_FEED_PER_CORE:g}, measured here)",
            )
            sub.add_argument("--headroom", type=float, default=1.2,
                             help="feed capacity over the GPUs' demand (default 1.2)")  # fmt: skip
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["demo", *argv]  # bare `run.py [--set ...]` is the demo
    args = parser.parse_args(argv)
    for option in PREPARE_OPTIONS:  # sugar for --set prepare.<option>=<value>
        value = getattr(args, option[2:], None)
        if value is not None:
            args.overrides.append(f"prepare.{option[2:]}={json.dumps(value)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        from orchestrator import commands
        from orchestrator.config import load_config

        command = getattr(commands, COMMANDS[args.command][0])
        if args.command == "evaluate":  # the config comes with the checkpoint
            command(args.model, args.ten_crop, args.overrides)
        elif args.command == "sweep":
            command(load_config(args.config, args.overrides), resume=args.resume)
        elif args.command == "report":
            command(load_config(args.config, args.overrides), args.sweep)
        elif args.command == "capacity":
            command(load_config(args.config, args.overrides), args.gpu_images_per_second,
                    args.gpus_per_node, args.feed_per_core, args.headroom)  # fmt: skip
        else:
            command(load_config(args.config, args.overrides))
    except ConfigError as error:
        print(f"{error.prefix}: {one_line(str(error))}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError) as error:
        # A path the user gave that is missing or closed to us, found only while working
        print(f"error: {one_line(str(error))}", file=sys.stderr)
        return 2
    except Exception:  # a bug, or a failure nobody foresaw: the traceback, with secrets masked
        print(redact_text(traceback.format_exc()), file=sys.stderr, end="")
        return 1
    return 0


def one_line(message: str) -> str:
    """A message fit for the console: secrets masked, one line, at most MAX_MESSAGE_CHARS."""
    text = " ".join(redact_text(message).split())
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 20] + f" ... ({len(text)} chars)"
    return text


if __name__ == "__main__":
    sys.exit(main())
