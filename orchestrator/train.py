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
from workloads.alexnet.engine import OptimizerConfig, accumulate, build_optimizer, eval_step, train_step
from workloads.alexnet.model import ModelConfig, build_model


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 90  # the paper trained ~90 epochs
    global_batch_size: int = 128  # summed over workers; the paper's 128
    num_workers: int = 2  # Ray Train workers (one process each; one GPU each when use_gpu)
    use_gpu: bool | None = None  # None: use GPUs when the cluster has one per worker
    cpus_per_worker: float = 1.0  # leave some CPUs free for Ray Data on small machines
    storage_path: str = "results"  # Ray Train run folders (use shared storage on a cluster)
    log_every_n_steps: int = 50  # rank 0 prints progress every n steps; 0: per epoch only

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


def _run_epoch(model, optimizer, shard, batch_size, prefetch_batches, log, epoch, log_every):
    """One pass over this worker's training shard; returns sums, seconds and seconds waiting."""
    sums, waited, step = None, 0.0, 0
    start = time.perf_counter()
    batches = iter(
        shard.iter_torch_batches(
            batch_size=batch_size, drop_last=True, prefetch_batches=prefetch_batches
        )
    )
    while True:
        before = time.perf_counter()
        batch = next(batches, None)
        waited += time.perf_counter() - before
        if batch is None:
            break
        sums = accumulate(sums, train_step(model, optimizer, batch["image"], batch["label"]))
        step += 1
        if log_every and step % log_every == 0:
            log(f"epoch {epoch} step {step}: running train loss "
                f"{(sums['loss_sum'] / sums['count']).item():.4f}")  # fmt: skip
    if sums is None:
        raise RuntimeError(
            f"a training shard had fewer than {batch_size} images: lower train.global_batch_size "
            "or use more training data"
        )
    return sums, time.perf_counter() - start, waited


def _evaluate(model, shard, batch_size, prefetch_batches):
    sums = None
    for batch in shard.iter_torch_batches(batch_size=batch_size, prefetch_batches=prefetch_batches):
        sums = accumulate(sums, eval_step(model, batch["image"], batch["label"]))
    if sums is None:  # this worker's validation shard is empty: contribute zeros
        zero = torch.zeros((), dtype=torch.float64)
        sums = {"loss_sum": zero, "correct1": zero, "correct5": zero, "count": zero}
    return sums


def train_fn_per_worker(loop_config: dict) -> None:
    model_config: ModelConfig = loop_config["model"]
    optim_config: OptimizerConfig = loop_config["optim"]
    train_config: TrainConfig = loop_config["train"]
    prefetch_batches: int = loop_config["prefetch_batches"]

    context = ray.train.get_context()
    world_size = context.get_world_size()
    log = RankZeroPrinter(context.get_world_rank())
    torch.manual_seed(loop_config["seed"])  # same initial weights on every rank

    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(build_model(model_config))
    optimizer = build_optimizer(model, optim_config, train_config.global_batch_size)
    lr = optimizer.param_groups[0]["lr"]
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    log(f"{world_size} workers on {device}, batch {train_config.batch_size_per_worker} per worker "
        f"({train_config.global_batch_size} global), lr {lr:g}")  # fmt: skip

    for epoch in range(1, train_config.epochs + 1):
        train_sums, seconds, waited = _run_epoch(
            model, optimizer, train_shard, train_config.batch_size_per_worker,
            prefetch_batches, log, epoch, train_config.log_every_n_steps,
        )  # fmt: skip
        train = _all_reduce_sums(train_sums, device)
        val = _all_reduce_sums(
            _evaluate(model, val_shard, train_config.batch_size_per_worker, prefetch_batches),
            device,
        )
        ray.train.report(
            {
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
        )


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
