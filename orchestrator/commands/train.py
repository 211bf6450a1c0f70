"""`train` (and `demo`, the default command): one training run, prepared shards -> Ray Data ->
Ray Train workers -> one MLflow run, with the epoch table and where to open the MLflow UI."""

from __future__ import annotations

import time

from orchestrator import data as data_pipeline
from orchestrator import tracking
from orchestrator.commands import add_config, add_overrides, load
from orchestrator.config import ExperimentConfig, to_yaml
from orchestrator.metrics import SUMMARY_COLUMNS


def add_arguments(parser, default_config=None) -> None:
    add_config(parser, default_config)
    add_overrides(parser)


def run(args) -> None:
    train(load(args))


def train(config: ExperimentConfig) -> tracking.TrackedRun:
    """One training run: prepared shards -> Ray Data -> Ray Train workers -> one MLflow run."""
    from orchestrator import cluster, identity, launch

    run_name = config.name or f"{config.tracking.experiment}-{time.strftime('%Y%m%d-%H%M%S')}"
    data = data_pipeline.open_data(config.data, config.prepare)
    job = launch.plan_training(config, data, run_name)
    print(
        f"data: {data.uri} ({data.count('train')} training / {data.count('val')} validation "
        f"images of {data.image_size} px, {len(data.classes)} classes)",
        flush=True,
    )
    run = tracking.TrackedRun(config.tracking, run_name, resume=config.name is not None)
    identity.check_resume(job.plan, run_name, run)
    run.log_start(
        params=job.params,
        tags={
            **tracking.provenance_tags(),
            **cluster.cluster_shape(),
            **job.identity_tags,
            "kind": "train",
        },
        config_yaml=to_yaml(job.config),
    )
    print(
        f"MLflow run {run.run_id} ('{run_name}'{', resumed' if run.resumed else ''}) in "
        f"{tracking.redacted(run.tracking_uri)}",
        flush=True,
    )
    launch.run_training(job, run)
    _print_summary(run)
    return run


def _print_summary(run: tracking.TrackedRun) -> None:
    """The epoch table from what MLflow holds, and how to open the MLflow UI."""
    history = {key: dict(run.metric_history(key)) for key, _, _ in SUMMARY_COLUMNS}
    print("\nepoch  " + "  ".join(title for _, title, _ in SUMMARY_COLUMNS))
    for epoch in sorted(history[SUMMARY_COLUMNS[0][0]]):
        cells = [
            shape.format(history[key].get(epoch, float("nan"))) for key, _, shape in SUMMARY_COLUMNS
        ]
        print(f"{epoch:>5}  " + "  ".join(cells))
    print(f"\nMLflow run {run.run_id} is in {tracking.redacted(run.tracking_uri)}")
    print(f"Open the MLflow UI:  {tracking.ui_command(run.tracking_uri)}")
