"""`prepare`: decode a raw image tree once into Parquet shards and statistics (a Ray Data job),
tracked as an MLflow run."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.commands import add_config, add_overrides, load

OPTIONS = {  # sugar for --set prepare.<option>=<value>
    "--source": "imagefolder (train/<class>/*, val/<class>/*) or imagenet (ILSVRC-2012 layouts)",
    "--root": "the raw dataset folder",
    "--out": "where to write the shards: a folder or a pyarrow filesystem URI (s3://, gs://)",
}


def add_arguments(parser) -> None:
    add_config(parser, None)
    add_overrides(parser)
    for option, option_help in OPTIONS.items():
        parser.add_argument(option, help=f"{option_help} (prepare.{option[2:]})")


def run(args) -> None:
    for option in OPTIONS:
        value = getattr(args, option[2:])
        if value is not None:
            args.overrides.append(f"prepare.{option[2:]}={json.dumps(value)}")
    prepare(load(args))


def prepare(config):
    """Decode a raw image tree once into shards (a Ray Data job), logged to MLflow; returns the
    `PrepareResult`. `config`: the experiment config (its `prepare` and `tracking` sections)."""
    from orchestrator.common import ray_cluster
    from orchestrator.common.errors import ConfigError, InputError
    from orchestrator.common.storage import Location
    from orchestrator.common.yaml_config import flatten, to_yaml
    from orchestrator.data.prepare import list_source, run_prepare
    from orchestrator.data.prepared import MANIFEST_FILE
    from orchestrator.data.sources import check_rejects, report_prepare
    from orchestrator.tracking.run import TrackedRun

    job = config.prepare
    if job.out is None:
        raise ConfigError("prepare.out: required (--out)")
    splits = list_source(job)  # bad paths and layouts fail here, before Ray starts
    try:
        Location.of(job.out)  # and so does an --out that no filesystem here opens
    except InputError as error:
        raise ConfigError(f"prepare.out: {error}") from None
    ray_cluster.ensure_ray()
    result = run_prepare(job, splits=splits)
    report_prepare(result)
    if not result.skipped:
        run = TrackedRun(config.tracking, f"prepare-{Path(job.root).name}")
        params = {**flatten(job, "prepare."), "prepare.files": result.total}
        run.log_start("prepare", params, config_yaml=to_yaml(job))
        run.log_metrics(
            {
                "images_written": sum(result.images.values()),
                "rejects": result.rejects,
                "seconds": result.seconds,
                "images_per_second": result.images_per_second,
                "images_per_second_per_core": result.images_per_second_per_core,
            }
        )
        out = Location.of(result.out)
        run.log_text(out.read_bytes("rejects.csv").decode(), "rejects.csv")
        if result.complete:
            run.log_text(out.read_bytes(MANIFEST_FILE).decode(), MANIFEST_FILE)
        run.finish("FINISHED" if result.complete else "FAILED")
    check_rejects(result, job)
    return result
