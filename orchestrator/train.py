"""Ray Train: the per-worker training loop and the `TorchTrainer` launch.

`train_fn_per_worker` runs on every worker: it builds the model from `ModelConfig`, wraps it in DDP
(`prepare_model`), consumes its shard of the Ray Data streams and reports all-reduced epoch
metrics with `ray.train.report`. The driver side (`fit`) sizes the worker group for the cluster
and hands rank 0's reports to the MLflow callback.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from orchestrator.errors import ConfigError
from workloads.alexnet.engine import (
    OptimizerConfig,
    accumulate,
    build_optimizer,
    eval_step,
    eval_step_multiview,
    train_step,
)
from workloads.alexnet.model import ModelConfig, build_model
from workloads.alexnet.transforms import BatchTransform


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 90  # the paper trained ~90 epochs
    global_batch_size: int = 128  # summed over workers; the paper's 128
    num_workers: int = 2  # Ray Train workers (one process each; one GPU each when use_gpu)
    use_gpu: bool | None = None  # None: use GPUs when the cluster has one per worker
    cpus_per_worker: float = 1.0  # leave some CPUs free for Ray Data on small machines
    storage_path: str = "results"  # Ray Train run folders (use shared storage on a cluster)
    log_every_n_steps: int = 50  # rank 0 prints progress every n steps; 0: per epoch only
    ten_crop: bool = False  # after the last epoch, also the paper's ten-crop validation

    def __post_init__(self):
        for name in ("epochs", "global_batch_size", "num_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: got {getattr(self, name)}; allowed: an integer >= 1")
        if not self.cpus_per_worker > 0:
            raise ValueError(f"cpus_per_worker: got {self.cpus_per_worker}; allowed: a number > 0")
        if self.log_every_n_steps < 0:
            raise ValueError(f"log_every_n_steps: got {self.log_every_n_steps}; allowed: >= 0")

    @property
    def batch_size_per_worker(self) -> int:
        return self.global_batch_size // self.num_workers

    def worker_settings(self, prefetch_batches: int, seed: int, use_gpu: bool) -> "WorkerSettings":
        return WorkerSettings(
            epochs=self.epochs,
            global_batch_size=self.global_batch_size,
            batch_size_per_worker=self.batch_size_per_worker,
            prefetch_batches=prefetch_batches,
            pin_memory=use_gpu,
            log_every_n_steps=self.log_every_n_steps,
            ten_crop=self.ten_crop,
            seed=seed,
        )


class RankZeroPrinter:
    """Progress lines from rank 0 only; a no-op on the other ranks."""

    def __init__(self, rank: int):
        self.enabled = rank == 0

    def __call__(self, message: str) -> None:
        if self.enabled:
            # To the process's real stdout: Ray Train's patched print() would echo it twice.
            print(message, file=sys.__stdout__, flush=True)


def _all_reduce_sums(sums: dict[str, torch.Tensor], device: torch.device) -> dict[str, float]:
    """Sum each entry over all workers (one collective for the whole dict)."""
    keys = sorted(sums)
    packed = torch.stack([sums[k].to(device=device, dtype=torch.float64) for k in keys])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(packed)
    return dict(zip(keys, packed.tolist()))


def _run_epoch(model, optimizer, shard, transform, epoch, settings, log):
    """One pass over this worker's training shard; returns sums, seconds and seconds waiting."""
    sums, waited, step = None, 0.0, 0
    start = time.perf_counter()
    batches = iter(
        shard.iter_torch_batches(
            batch_size=settings.batch_size_per_worker,
            drop_last=True,
            prefetch_batches=settings.prefetch_batches,
            pin_memory=settings.pin_memory,
        )
    )
    while True:
        before = time.perf_counter()
        batch = next(batches, None)
        waited += time.perf_counter() - before
        if batch is None:
            break
        images = transform.train(batch["image"], batch["id"], epoch)  # (B, 3, C, C) float
        sums = accumulate(sums, train_step(model, optimizer, images, batch["label"]))
        step += 1
        if settings.log_every_n_steps and step % settings.log_every_n_steps == 0:
            log(f"epoch {epoch} step {step}: running train loss "
                f"{(sums['loss_sum'] / sums['count']).item():.4f}")  # fmt: skip
    if sums is None:
        raise RuntimeError(
            f"a training shard had fewer than {settings.batch_size_per_worker} images: lower "
            "train.global_batch_size or use more training data"
        )
    return sums, time.perf_counter() - start, waited


def _evaluate(model, shard, transform, settings, ten_crop: bool):
    """Sums over this worker's validation shard: centre crop, or the ten-crop average."""
    sums = None
    for batch in shard.iter_torch_batches(
        batch_size=settings.batch_size_per_worker, prefetch_batches=settings.prefetch_batches
    ):
        if ten_crop:
            step = eval_step_multiview(model, transform.ten_crop(batch["image"]), batch["label"])
        else:
            step = eval_step(model, transform.center(batch["image"]), batch["label"])
        sums = accumulate(sums, step)
    if sums is None:  # this worker's validation shard is empty: contribute zeros
        zero = torch.zeros((), dtype=torch.float64)
        sums = {"loss_sum": zero, "correct1": zero, "correct5": zero, "count": zero}
    return sums


@dataclass(frozen=True)
class WorkerSettings:
    """What each worker needs beyond the model and optimizer configs (sent once, pickled)."""

    epochs: int
    global_batch_size: int
    batch_size_per_worker: int
    prefetch_batches: int
    pin_memory: bool
    log_every_n_steps: int
    ten_crop: bool
    seed: int


def train_fn_per_worker(loop_config: dict) -> None:
    model_config: ModelConfig = loop_config["model"]
    optim_config: OptimizerConfig = loop_config["optim"]
    settings: WorkerSettings = loop_config["settings"]
    transform: BatchTransform = loop_config["transform"]

    context = ray.train.get_context()
    world_size = context.get_world_size()
    log = RankZeroPrinter(context.get_world_rank())
    torch.manual_seed(settings.seed)  # same initial weights on every rank

    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(build_model(model_config))
    optimizer = build_optimizer(model, optim_config, settings.global_batch_size)
    lr = optimizer.param_groups[0]["lr"]
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    log(f"{world_size} workers on {device}, batch {settings.batch_size_per_worker} per worker "
        f"({settings.global_batch_size} global), lr {lr:g}")  # fmt: skip

    for epoch in range(1, settings.epochs + 1):
        train_sums, seconds, waited = _run_epoch(
            model, optimizer, train_shard, transform, epoch, settings, log
        )
        train = _all_reduce_sums(train_sums, device)
        val = _all_reduce_sums(_evaluate(model, val_shard, transform, settings, False), device)
        metrics = {
            "epoch": epoch,
            "train_loss": train["loss_sum"] / train["count"],
            "train_top1_error": 1 - train["correct1"] / train["count"],
            "val_loss": val["loss_sum"] / val["count"],
            "val_top1_error": 1 - val["correct1"] / val["count"],
            "val_top5_error": 1 - val["correct5"] / val["count"],
            "lr": lr,
            "images_per_second": train["count"] / seconds,
            "data_wait_fraction": waited / seconds,
            "epoch_seconds": seconds,
        }
        if settings.ten_crop and epoch == settings.epochs:  # the paper's test: ten views
            ten = _all_reduce_sums(_evaluate(model, val_shard, transform, settings, True), device)
            metrics["val_top1_error_10crop"] = 1 - ten["correct1"] / ten["count"]
            metrics["val_top5_error_10crop"] = 1 - ten["correct5"] / ten["count"]
        ray.train.report(metrics)


def resolve_use_gpu(config: TrainConfig) -> bool:
    """`train.use_gpu`, or when unset: GPUs if the cluster has one for every worker."""
    if config.use_gpu is not None:
        return config.use_gpu
    gpus = ray.cluster_resources().get("GPU", 0)
    if 0 < gpus < config.num_workers:
        print(f"the cluster has {gpus:g} GPU(s) for {config.num_workers} workers: training on "
              f"CPU; set train.num_workers={int(gpus)} to train on the GPUs")  # fmt: skip
    return gpus >= config.num_workers


def check_capacity(config: TrainConfig, use_gpu: bool, data_cpus: float) -> None:
    """Fail fast when the worker group cannot start, or would leave Ray Data no CPU at all."""
    cluster_cpus = ray.cluster_resources().get("CPU", 0)
    needed = config.num_workers * config.cpus_per_worker
    if needed > cluster_cpus:
        raise ConfigError(
            f"train.num_workers x train.cpus_per_worker = {needed:g} CPUs, but the cluster has "
            f"{cluster_cpus:g}: lower one of them"
        )
    if cluster_cpus - needed < data_cpus:
        raise ConfigError(
            f"train.num_workers x train.cpus_per_worker = {needed:g} of the cluster's "
            f"{cluster_cpus:g} CPUs leaves less than data.augment_cpus ({data_cpus:g}) for the Ray "
            "Data tasks that feed them: lower train.cpus_per_worker (e.g. 0.75) or "
            "data.augment_cpus"
        )
    if use_gpu and ray.cluster_resources().get("GPU", 0) < config.num_workers:
        raise ConfigError(
            f"train.use_gpu is true but the cluster has fewer than {config.num_workers} GPUs"
        )


def fit(
    loop_config: dict,
    train_config: TrainConfig,
    datasets: dict[str, ray.data.Dataset],
    run_name: str,
    callbacks: list[ray.train.UserCallback],
    use_gpu: bool,
) -> ray.train.Result:
    """Run the worker group to completion; raises when training fails."""
    resources = {"CPU": train_config.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = 1
    trainer = ray.train.torch.TorchTrainer(
        train_fn_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=train_config.num_workers,
            use_gpu=use_gpu,
            resources_per_worker=resources,
        ),
        datasets=datasets,
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=str(_absolute(train_config.storage_path)),
            callbacks=callbacks,
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),  # no per-report echo
        ),
    )
    return trainer.fit()


def _absolute(path: str):
    return path if "://" in path else Path(path).expanduser().resolve()
