"""One function per subcommand of `orchestrator/run.py`. Each takes a validated config."""

from __future__ import annotations

import dataclasses
import logging
import os
import time

import ray

from orchestrator import data as data_pipeline
from orchestrator import tracking
from orchestrator import train as trainer
from orchestrator.config import ExperimentConfig, flatten, to_yaml
from orchestrator.errors import ConfigError
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
    print(format_table(layer_table(model, model_config.input_size), sum(p.numel() for p in model.parameters())))


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


def _cluster_shape() -> dict[str, str]:
    resources = ray.cluster_resources()
    return {
        "cluster_nodes": str(len([n for n in ray.nodes() if n["Alive"]])),
        "cluster_cpus": f"{resources.get('CPU', 0):g}",
        "cluster_gpus": f"{resources.get('GPU', 0):g}",
    }


def train(config: ExperimentConfig) -> tracking.TrackedRun:
    """One training run: Ray Data -> Ray Train workers -> one MLflow run."""
    run_name = config.name or f"{config.tracking.experiment}-{time.strftime('%Y%m%d-%H%M%S')}"

    # Everything that can fail on the user's input fails here, before any Ray work.
    root = data_pipeline.dataset_root(config.data)
    train_list, val_list = data_pipeline.list_splits(root)
    num_classes = len(train_list.classes)
    if config.model.num_classes not in (None, num_classes):
        raise ConfigError(
            f"model.num_classes: got {config.model.num_classes}, but {root}/train has "
            f"{num_classes} classes; leave it unset to take it from the data"
        )
    config = dataclasses.replace(
        config, name=run_name, model=dataclasses.replace(config.model, num_classes=num_classes)
    )
    print(f"data: {root} ({len(train_list)} training / {len(val_list)} validation images, "
          f"{num_classes} classes)", flush=True)  # fmt: skip

    _ensure_ray()
    use_gpu = trainer.resolve_use_gpu(config.train)
    trainer.check_capacity(config.train, use_gpu, config.data.augment_cpus)
    print(f"Ray Data: decoding and resizing {len(train_list) + len(val_list)} images to "
          f"{config.data.image_size} px on CPU tasks...", flush=True)  # fmt: skip
    started = time.monotonic()
    prepared = data_pipeline.build_datasets(
        train_list, val_list, config.data, config.model.input_size, config.seed
    )
    seconds = time.monotonic() - started
    print(f"Ray Data: {prepared.num_train} + {prepared.num_val} images ready in {seconds:.1f} s, "
          "mean image and RGB eigenvalues "
          f"({', '.join(f'{v:.4f}' for v in prepared.stats.eigenvalues)}) computed", flush=True)  # fmt: skip

    run = tracking.TrackedRun(config.tracking, run_name)
    run.log_start(
        params={
            **flatten(dataclasses.replace(config, model=config.model.resolved())),
            "data.num_train_images": prepared.num_train,
            "data.num_val_images": prepared.num_val,
            "data.num_classes": num_classes,
            "train.use_gpu_resolved": use_gpu,
        },
        tags={**tracking.provenance_tags(), **_cluster_shape()},
        config_yaml=to_yaml(config),
    )
    print(f"MLflow run {run.run_id} ('{run_name}') in {run.tracking_uri}", flush=True)

    loop_config = {
        "model": config.model,
        "optim": config.optim,
        "train": config.train,
        "seed": config.seed,
        "prefetch_batches": config.data.prefetch_batches,
    }
    try:
        trainer.fit(
            loop_config,
            config.train,
            datasets={"train": prepared.train, "val": prepared.val},
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
