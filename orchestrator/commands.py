"""One function per subcommand of `orchestrator/run.py`. Each takes a validated config."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import ray
import ray.data
import torch

from orchestrator import data as data_pipeline
from orchestrator import prepare as prepare_job
from orchestrator import tracking
from orchestrator import train as trainer
from orchestrator.config import ExperimentConfig, flatten, load_config, load_config_text, to_yaml
from orchestrator.errors import ConfigError
from orchestrator.prepare import PrepareConfig, PrepareResult
from orchestrator.storage import Location
from workloads.alexnet.engine import accumulate, eval_step, eval_step_multiview
from workloads.alexnet.model import build_model
from workloads.alexnet.summary import format_table, layer_table
from workloads.alexnet.transforms import BatchTransform


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


def _ensure_ray() -> None:
    """Join the cluster in RAY_ADDRESS (or the job's cluster), else start a local one."""
    if ray.is_initialized():
        return
    # Ray Data logs several INFO lines per dataset execution (every epoch), which would bury the
    # epoch summaries; its warnings still show. The processes of a local Ray inherit this
    # setting; RAY_DATA_LOG_LEVEL=INFO brings the lines back.
    if "RAY_DATA_LOG_LEVEL" not in os.environ:
        os.environ["RAY_DATA_LOG_LEVEL"] = "WARNING"
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # configured at import
    ray.init(address=os.environ.get("RAY_ADDRESS"))
    # Our own lines report progress (per shard, per step, per epoch); Ray Data's bars, drawn by
    # actors whose output is relayed line by line, turn into noise in logs.
    ray.data.DataContext.get_current().enable_progress_bars = False


def _cluster_shape() -> dict[str, str]:
    resources = ray.cluster_resources()
    return {
        "cluster_nodes": str(len([n for n in ray.nodes() if n["Alive"]])),
        "cluster_cpus": f"{resources.get('CPU', 0):g}",
        "cluster_gpus": f"{resources.get('GPU', 0):g}",
    }


def _report_prepare(result: PrepareResult) -> None:
    if result.skipped:
        print(f"prepared data: {result.out} (already complete: {result.images['train']} training "
              f"/ {result.images['val']} validation images)", flush=True)  # fmt: skip
        return
    resumed = result.total - result.processed
    earlier = f"; {resumed} done by an earlier run" if resumed else ""
    print(f"prepare: {sum(result.images.values())} images ({result.images['train']} train, "
          f"{result.images['val']} val) in {result.out}; {result.rejects} rejected (see "
          f"{result.rejects_file}). This run: {result.processed} files in {result.seconds:.1f} s, "
          f"{result.images_per_second:.0f} images/s, {result.images_per_second_per_core:.0f} "
          f"images/s per CPU core ({result.cpus:g} cores){earlier}", flush=True)  # fmt: skip


def _check_rejects(result: PrepareResult, config: PrepareConfig) -> None:
    if not result.complete:
        raise ConfigError(
            f"prepare: {result.rejects} of {result.total} files could not be read "
            f"({result.rejects / result.total:.2%}), more than prepare.max_reject_fraction "
            f"({config.max_reject_fraction:g}); they are listed in {result.rejects_file}"
        )


def prepare(config: ExperimentConfig) -> PrepareResult:
    """Decode a raw image tree once into shards (a Ray Data job), logged to MLflow."""
    job = config.prepare
    if job.out is None:
        raise ConfigError("prepare.out: required (--out)")
    splits = prepare_job.list_source(job)  # bad paths and layouts fail here, before Ray starts
    _ensure_ray()
    result = prepare_job.run_prepare(job, splits=splits)
    _report_prepare(result)
    if not result.skipped:
        run = tracking.TrackedRun(config.tracking, f"prepare-{Path(job.root).name}")
        run.log_start(
            params={**flatten(job, "prepare."), "prepare.files": result.total},
            tags={**tracking.provenance_tags(), **_cluster_shape(), "kind": "prepare"},
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
    _check_rejects(result, job)
    return result


def _open_data(config: ExperimentConfig) -> data_pipeline.PreparedData:
    """The config's prepared data, preparing a raw source first (once). Starts Ray.

    Bad paths fail before Ray starts.
    """
    raw = data_pipeline.raw_source(config.data, config.prepare)
    splits = prepare_job.list_source(raw) if raw is not None else None
    _ensure_ray()
    if raw is None:
        return data_pipeline.open_prepared(config.data.root)
    result = data_pipeline.prepare_source(raw, splits)
    _report_prepare(result)
    _check_rejects(result, raw)
    return data_pipeline.open_prepared(result.out)


def _batch_transform(config: ExperimentConfig, data: data_pipeline.PreparedData) -> BatchTransform:
    return BatchTransform(
        crop_size=config.model.input_size,
        mean_image=data.stats.mean_image if config.data.mean_subtraction else None,
        eigenvalues=data.stats.eigenvalues,
        eigenvectors=data.stats.eigenvectors,
        pca_noise_std=config.data.pca_noise_std,
        flip=config.data.flip,
        seed=config.seed,
    )


def train(config: ExperimentConfig) -> tracking.TrackedRun:
    """One training run: prepared shards -> Ray Data -> Ray Train workers -> one MLflow run."""
    run_name = config.name or f"{config.tracking.experiment}-{time.strftime('%Y%m%d-%H%M%S')}"
    data = _open_data(config)
    uri = data.uri
    num_classes = len(data.classes)
    if config.model.num_classes not in (None, num_classes):
        raise ConfigError(
            f"model.num_classes: got {config.model.num_classes}, but the data has {num_classes} "
            "classes; leave it unset to take it from the data"
        )
    if data.image_size < config.model.input_size:
        raise ConfigError(
            f"model.input_size: got {config.model.input_size}; allowed: <= the prepared images' "
            f"{data.image_size} px ({uri})"
        )
    config = dataclasses.replace(
        config, name=run_name, model=dataclasses.replace(config.model, num_classes=num_classes)
    )
    print(f"data: {uri} ({data.count('train')} training / {data.count('val')} validation "
          f"images of {data.image_size} px, {num_classes} classes)", flush=True)  # fmt: skip

    use_gpu = trainer.resolve_use_gpu(config.train)
    trainer.check_capacity(config.train, use_gpu, config.data.decode_cpus)
    transform = _batch_transform(config, data)

    run = tracking.TrackedRun(config.tracking, run_name, resume=config.name is not None)
    run.log_start(
        params={
            **flatten(dataclasses.replace(config, model=config.model.resolved())),
            "data.prepared_uri": uri,
            "data.num_train_images": data.count("train"),
            "data.num_val_images": data.count("val"),
            "data.num_classes": num_classes,
            "data.image_size": data.image_size,
            "data.rejects": data.manifest["rejects"],
            "train.use_gpu_resolved": use_gpu,
        },
        tags={**tracking.provenance_tags(), **_cluster_shape(), "kind": "train"},
        config_yaml=to_yaml(config),
    )
    print(f"MLflow run {run.run_id} ('{run_name}'{', resumed' if run.resumed else ''}) in "
          f"{run.tracking_uri}", flush=True)  # fmt: skip

    images_per_worker = data.count("train") // config.train.num_workers  # an equal split
    settings = trainer.WorkerSettings(
        train=config.train,
        steps_per_epoch=max(1, images_per_worker // config.train.batch_size_per_worker),
        prefetch_batches=config.data.prefetch_batches,
        pin_memory=use_gpu,
        seed=config.seed,
        config_yaml=to_yaml(config),
    )
    loop_config = {
        "model": config.model,
        "optim": config.optim,
        "settings": settings,
        "transform": transform,
    }
    datasets = {
        "train": data_pipeline.decoded_stream(data, "train", config.data, seed=config.seed),
        "val": data_pipeline.decoded_stream(data, "val", config.data, seed=None),
    }
    try:
        trainer.fit(
            loop_config,
            config.train,
            datasets=datasets,
            run_name=run_name,
            callbacks=[run.epoch_logger()],
            use_gpu=use_gpu,
        )
    except KeyboardInterrupt:
        run.finish("KILLED")
        raise
    except BaseException:
        run.finish("FAILED")
        raise
    run.finish("FINISHED")
    _print_summary(run)
    return run


def _print_summary(run: tracking.TrackedRun) -> None:
    keys = ("train_loss", "val_top1_error", "val_top5_error", "images_per_second")
    history = {key: dict(run.metric_history(key)) for key in keys}
    print("\nepoch  train loss  val top-1 err  val top-5 err  images/s")
    for epoch in sorted(history["train_loss"]):
        row = [history[key].get(epoch, float("nan")) for key in keys]
        print(f"{epoch:>5}  {row[0]:>10.4f}  {row[1]:>13.4f}  {row[2]:>13.4f}  {row[3]:>8.0f}")
    print(f"\nMLflow run {run.run_id} is in {run.tracking_uri}")
    print(f"Open the MLflow UI:  {tracking.ui_command(run.tracking_uri)}")


def evaluate(model_uri: str, ten_crop: bool, overrides: list[str]) -> dict[str, float]:
    """Top-1/top-5 error of a checkpoint on its prepared validation split, logged to MLflow.

    `model_uri`: a checkpoint folder or file written by `train`, or `runs:/<MLflow run id>` (that
    run's last checkpoint). The run's own config comes with the checkpoint; `--set` overrides it
    (e.g. `data.root` for another prepared dataset).
    """
    if model_uri.startswith("runs:/"):
        model_uri = tracking.checkpoint_of_run(load_config(None, overrides).tracking, model_uri)
    state = trainer.read_checkpoint(model_uri)
    config = load_config_text(state["config"], overrides, source=f"{model_uri} (its config)")
    data = _open_data(config)
    model = build_model(config.model)
    model.load_state_dict(state["model"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    transform = _batch_transform(config, data)
    stream = data_pipeline.decoded_stream(data, "val", config.data, seed=None)
    center = views = None
    for batch in stream.iter_torch_batches(batch_size=64, device=device):
        images, labels = batch["image"], batch["label"]
        center = accumulate(center, eval_step(model, transform.center(images), labels, autocast))
        if ten_crop:
            step = eval_step_multiview(model, transform.ten_crop(images), labels, autocast)
            views = accumulate(views, step)
    metrics = {
        "val_top1_error": 1 - (center["correct1"] / center["count"]).item(),
        "val_top5_error": 1 - (center["correct5"] / center["count"]).item(),
    }
    if views is not None:
        metrics["val_top1_error_10crop"] = 1 - (views["correct1"] / views["count"]).item()
        metrics["val_top5_error_10crop"] = 1 - (views["correct5"] / views["count"]).item()
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
