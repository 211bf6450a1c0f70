"""One function per subcommand of `orchestrator/run.py`. Each takes a validated config."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from orchestrator import data as data_pipeline
from orchestrator import jobs, tracking
from orchestrator import prepare as prepare_job
from orchestrator.capacity import CapacityPlan, plan_capacity
from orchestrator.checkpoints import read_checkpoint
from orchestrator.config import ExperimentConfig, flatten, load_config, load_config_text, to_yaml
from orchestrator.errors import ConfigError, InputError
from orchestrator.prepare import PrepareResult
from orchestrator.storage import Location
from workloads.alexnet import engine
from workloads.alexnet.model import build_model
from workloads.alexnet.summary import format_table, layer_table


def describe(config: ExperimentConfig) -> None:
    """Print the model's layer table: output shape, parameters, multiply-adds per layer."""
    model_config = config.model.resolved()
    model = build_model(model_config)
    settings = ", ".join(
        f"{f.name}={getattr(model_config, f.name)}" for f in dataclasses.fields(model_config)
    )
    print(f"AlexNet({settings})\n")
    print(
        format_table(
            layer_table(model, model_config.input_size), sum(p.numel() for p in model.parameters())
        )
    )


def prepare(config: ExperimentConfig) -> PrepareResult:
    """Decode a raw image tree once into shards (a Ray Data job), logged to MLflow."""
    job = config.prepare
    if job.out is None:
        raise ConfigError("prepare.out: required (--out)")
    splits = prepare_job.list_source(job)  # bad paths and layouts fail here, before Ray starts
    try:
        Location.of(job.out)  # and so does an --out that no filesystem here opens
    except InputError as error:
        raise ConfigError(f"prepare.out: {error}") from None
    jobs.ensure_ray()
    result = prepare_job.run_prepare(job, splits=splits)
    jobs.report_prepare(result)
    if not result.skipped:
        run = tracking.TrackedRun(config.tracking, f"prepare-{Path(job.root).name}")
        run.log_start(
            params={**flatten(job, "prepare."), "prepare.files": result.total},
            tags={**tracking.provenance_tags(), **jobs.cluster_shape(), "kind": "prepare"},
            config_yaml=to_yaml(job),
        )
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
            run.log_text(out.read_bytes("manifest.json").decode(), "manifest.json")
        run.finish("FINISHED" if result.complete else "FAILED")
    jobs.check_rejects(result, job)
    return result


def train(config: ExperimentConfig) -> tracking.TrackedRun:
    """One training run: prepared shards -> Ray Data -> Ray Train workers -> one MLflow run."""
    run_name = config.name or f"{config.tracking.experiment}-{time.strftime('%Y%m%d-%H%M%S')}"
    data = jobs.open_data(config)
    job = jobs.plan_training(config, data, run_name)
    print(f"data: {data.uri} ({data.count('train')} training / {data.count('val')} validation "
          f"images of {data.image_size} px, {len(data.classes)} classes)", flush=True)  # fmt: skip
    run = tracking.TrackedRun(config.tracking, run_name, resume=config.name is not None)
    jobs.check_resume(job, run)
    run.log_start(
        params=job.params,
        tags={
            **tracking.provenance_tags(),
            **jobs.cluster_shape(),
            **job.identity_tags,
            "kind": "train",
        },  # fmt: skip
        config_yaml=to_yaml(job.config),
    )
    print(f"MLflow run {run.run_id} ('{run_name}'{', resumed' if run.resumed else ''}) in "
          f"{tracking.redacted(run.tracking_uri)}", flush=True)  # fmt: skip
    jobs.run_training(job, run)
    _print_summary(run)
    return run


def sweep(config: ExperimentConfig, resume: bool = False) -> None:
    """A Ray Tune sweep over `sweep.space`: one TorchTrainer per trial, nested MLflow runs."""
    from orchestrator import sweep as sweeps

    sweeps.sweep(config, resume)


def report(config: ExperimentConfig, sweep_name: str) -> list[dict]:
    """A sweep's trials from MLflow, best first, and the paths of its plots."""
    from orchestrator import sweep as sweeps

    return sweeps.report(config, sweep_name)


def capacity(
    config: ExperimentConfig,
    images_per_second_per_gpu: float,
    gpus_per_node: int,
    feed_per_core: float,
    headroom: float,
) -> CapacityPlan:
    """The CPU cores a GPU node needs to feed its GPUs, and the config fields that set them."""
    try:
        plan = plan_capacity(images_per_second_per_gpu, gpus_per_node, feed_per_core,
                             config.train.cpus_per_worker, headroom=headroom)  # fmt: skip
    except ValueError as error:
        raise ConfigError(str(error)) from None
    print(plan.describe())
    return plan


def _print_summary(run: tracking.TrackedRun) -> None:
    keys = ("train_loss", "val_top1_error", "val_top5_error", "images_per_second")
    history = {key: dict(run.metric_history(key)) for key in keys}
    print("\nepoch  train loss  val top-1 err  val top-5 err  images/s")
    for epoch in sorted(history["train_loss"]):
        row = [history[key].get(epoch, float("nan")) for key in keys]
        print(f"{epoch:>5}  {row[0]:>10.4f}  {row[1]:>13.4f}  {row[2]:>13.4f}  {row[3]:>8.0f}")
    print(f"\nMLflow run {run.run_id} is in {tracking.redacted(run.tracking_uri)}")
    print(f"Open the MLflow UI:  {tracking.ui_command(run.tracking_uri)}")


def _check_classes(state: dict, config: ExperimentConfig, data, model_uri: str) -> None:
    """The validation data's labels must mean what the checkpoint's outputs mean."""
    trained = list(state.get("classes") or [])  # empty for checkpoints from before it was kept
    if trained and trained != data.classes:
        if sorted(trained) == sorted(data.classes):
            problem = "the same classes in another order"
        else:
            missing = sorted(set(trained) ^ set(data.classes))
            problem = f"other classes ({len(data.classes)}; differing: {', '.join(missing[:5])})"
        raise InputError(
            f"data.root: {data.uri} has {problem} than the checkpoint {model_uri} was trained "
            f"on ({len(trained)} classes); evaluate it on data prepared from the same class list"
        )
    if config.model.num_classes not in (None, len(data.classes)):
        raise InputError(
            f"data.root: {data.uri} has {len(data.classes)} classes; the checkpoint {model_uri} "
            f"predicts {config.model.num_classes}"
        )


def evaluate(model_uri: str, ten_crop: bool, overrides: list[str]) -> dict[str, float]:
    """Top-1/top-5 error of a checkpoint on its prepared validation split, logged to MLflow.

    `model_uri`: a checkpoint folder or file written by `train`, `runs:/<MLflow run id>` (that
    run's last checkpoint), or a model a sweep registered (`models:/<name>@<alias>` or
    `models:/<name>/<version>`: the checkpoint it was made from). The run's own config comes
    with the checkpoint; `--set` overrides it (e.g. `data.root` for another prepared dataset).
    """
    if model_uri.startswith(("runs:/", "models:/")):
        model_uri = tracking.checkpoint_of_run(load_config(None, overrides).tracking, model_uri)
    state = read_checkpoint(model_uri)
    config = load_config_text(state["config"], overrides, source=f"{model_uri} (its config)")
    data = jobs.open_data(config, check=lambda data: _check_classes(state, config, data, model_uri))
    model = build_model(config.model)
    model.load_state_dict(state["model"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    stream = data_pipeline.decoded_stream(data, "val", config.data, seed=None)
    batches = ((batch["image"], batch["label"])
               for batch in stream.iter_torch_batches(batch_size=64, device=device))  # fmt: skip
    center, views = engine.evaluate(model, batches, jobs.batch_transform(config, data),
                                    engine.autocast_dtype_for(device, config.train.precision),
                                    ten_crop)  # fmt: skip
    if center is None:
        raise InputError(f"data.root: {data.uri} has no validation images to evaluate on")
    metrics = engine.error_rates(center)
    if views is not None:
        metrics.update(engine.error_rates(views, "_10crop"))
    count = int(center["count"].item())
    print(f"evaluated {model_uri} (epoch {state['epoch']}) on {count} validation images of "
          f"{data.uri}:")  # fmt: skip
    for key, value in metrics.items():
        print(f"  {key:<24} {value:.4f}")

    run = tracking.TrackedRun(config.tracking, f"evaluate-{config.name or 'checkpoint'}")
    run.log_start(
        params={
            "model": model_uri,
            "epoch": state["epoch"],
            "data.prepared_uri": data.uri,
            "images": count,
            "ten_crop": ten_crop,
        },  # fmt: skip
        tags={**tracking.provenance_tags(), "kind": "evaluate"},
        config_yaml=state["config"],
    )
    run.log_metrics(metrics)
    run.finish("FINISHED")
    return metrics
