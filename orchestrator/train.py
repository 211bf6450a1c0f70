"""Ray Train: the per-worker training loop and the `TorchTrainer` launch.

`train_fn_per_worker` runs on every worker: it builds the model from `ModelConfig`, wraps it in DDP
(`prepare_model`), consumes its shard of the Ray Data streams, augments on its device, and
reports all-reduced epoch metrics with `ray.train.report`, with a checkpoint every
`checkpoint_every` epochs. After a failure Ray Train restarts the workers, which resume from the
latest checkpoint (model, optimizer, schedule, epoch, RNG states). The driver side (`fit`) sizes
the worker group for the cluster and hands rank 0's reports to the MLflow callback.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import ray
import ray.data
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from orchestrator import tracking
from orchestrator.checkpoints import CHECKPOINT_FILE, newest_checkpoint, write_meta
from orchestrator.errors import ConfigError, check_custom_resources
from orchestrator.redact import redact_text
from workloads.alexnet.engine import (
    OptimizerConfig,
    accumulate,
    autocast_dtype_for,
    build_optimizer,
    error_rates,
    evaluate,
    set_lr,
    train_step,
)
from workloads.alexnet.model import AlexNet, ModelConfig, build_model
from workloads.alexnet.schedule import LearningRateSchedule
from workloads.alexnet.towers import TwoTowerAlexNet
from workloads.alexnet.transforms import BatchTransform


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 90  # the paper trained ~90 epochs
    global_batch_size: int = 128  # summed over workers; the paper's 128
    num_workers: int = 2  # Ray Train workers (one process each)
    # data: DDP, one device per worker; towers: the paper's two-tower split over a worker's two
    # devices (one worker); hybrid: towers in each worker x DDP across the workers
    parallel: Literal["data", "towers", "hybrid"] = "data"
    use_gpu: bool | None = None  # None: use GPUs when the cluster has one per worker
    cpus_per_worker: float = 1.0  # leave some CPUs free for Ray Data on small machines
    # custom Ray resources each worker also needs, e.g. {trainer: 0.01}: only nodes that offer
    # them host training workers (see cluster/README.md)
    resources_per_worker: dict[str, float] = field(default_factory=dict)
    storage_path: str = "results"  # Ray Train run folders (use shared storage on a cluster)
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch always gets one)
    keep_checkpoints: int = 2  # the newest ones kept in storage_path/<run name>/
    max_failures: int = 3  # worker-group restarts from the last checkpoint before giving up
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPUs
    channels_last: bool | None = None  # None: on GPUs
    compile: bool = False  # torch.compile the model
    log_every_n_steps: int = 50  # rank 0 prints progress every n steps; 0: per epoch only
    ten_crop: bool = False  # after the last epoch, also the paper's ten-crop validation
    # true: resume a run by name although fields that define its training changed (model, data,
    # optimizer, batch, seed: orchestrator/identity.py); false refuses such a resume
    resume_changed: bool = False

    def __post_init__(self):
        for name in ("epochs", "global_batch_size", "num_workers", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: got {getattr(self, name)}; allowed: an integer >= 1")
        if self.keep_checkpoints < 1 or self.max_failures < 0:
            raise ValueError("keep_checkpoints: allowed >= 1; max_failures: allowed >= 0")
        if not self.cpus_per_worker > 0:
            raise ValueError(f"cpus_per_worker: got {self.cpus_per_worker}; allowed: a number > 0")
        check_custom_resources("resources_per_worker", self.resources_per_worker)
        if self.log_every_n_steps < 0:
            raise ValueError(f"log_every_n_steps: got {self.log_every_n_steps}; allowed: >= 0")
        if self.parallel == "towers" and self.num_workers != 1:
            raise ValueError(
                f"num_workers: got {self.num_workers}; allowed with parallel 'towers': 1 "
                "(use 'hybrid' for towers in each of several workers)"
            )
        if self.parallel == "hybrid" and self.num_workers < 2:
            raise ValueError("num_workers: allowed with parallel 'hybrid': >= 2 (or use 'towers')")

    @property
    def devices_per_worker(self) -> int:
        return 1 if self.parallel == "data" else 2

    @property
    def batch_size_per_worker(self) -> int:
        return self.global_batch_size // self.num_workers


@dataclass(frozen=True)
class WorkerSettings:
    """What each worker needs beyond the model and optimizer configs (sent once, pickled)."""

    train: TrainConfig
    steps_per_epoch: int  # per worker: its equal share of the images, whole batches
    prefetch_batches: int
    pin_memory: bool
    seed: int
    config_yaml: str  # the run's resolved config, stored in every checkpoint
    classes: tuple[str, ...] = ()  # the data's class names in label order, checked by evaluate
    training_digest: str = ""  # of the fields that define the training (orchestrator/identity.py)
    training_fields: dict = field(default_factory=dict)
    run_folder: str = ""  # <storage_path>/<run name>: where a restart looks for checkpoints


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


@dataclass
class _Loop:
    """The worker's training state and how it computes (one object, passed to the verbs)."""

    model: torch.nn.Module  # as trained (DDP-wrapped, maybe compiled)
    module: torch.nn.Module  # the AlexNet or TwoTowerAlexNet inside, for checkpoints
    optimizer: torch.optim.Optimizer
    schedule: LearningRateSchedule
    transform: BatchTransform
    settings: WorkerSettings
    autocast_dtype: torch.dtype | None
    channels_last: bool
    log: RankZeroPrinter

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        return images if self.channels_last else images.contiguous()


def _run_epoch(loop: _Loop, shard, epoch: int):
    """One pass over this worker's training shard; returns sums, seconds and seconds waiting."""
    settings = loop.settings
    sums, waited, step = None, 0.0, 0
    start = time.perf_counter()
    batches = iter(
        shard.iter_torch_batches(
            batch_size=settings.train.batch_size_per_worker,
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
        set_lr(loop.optimizer, loop.schedule.lr(epoch, step / settings.steps_per_epoch))
        images = loop.inputs(loop.transform.train(batch["image"], batch["id"], epoch))
        result = train_step(
            loop.model, loop.optimizer, images, batch["label"], autocast_dtype=loop.autocast_dtype
        )
        sums = accumulate(sums, result)
        step += 1
        if settings.train.log_every_n_steps and step % settings.train.log_every_n_steps == 0:
            loop.log(f"epoch {epoch} step {step}: running train loss "
                     f"{(sums['loss_sum'] / sums['count']).item():.4f}")  # fmt: skip
    if sums is None:
        raise RuntimeError(
            f"a training shard had fewer than {settings.train.batch_size_per_worker} images: "
            "lower train.global_batch_size or use more training data"
        )
    return sums, time.perf_counter() - start, waited


def _evaluate(loop: _Loop, shard, ten_crop: bool):
    """Sums over this worker's validation shard: (centre crop, ten-crop average or None).
    An empty shard contributes zeros: every rank joins the same all-reduces."""
    batches = (
        (batch["image"], batch["label"])
        for batch in shard.iter_torch_batches(
            batch_size=loop.settings.train.batch_size_per_worker,
            prefetch_batches=loop.settings.prefetch_batches,
        )
    )
    center, views = evaluate(loop.model, batches, loop.transform, loop.autocast_dtype, ten_crop,
                             loop.channels_last)  # fmt: skip
    zero = torch.zeros((), dtype=torch.float64)
    zeros = {"loss_sum": zero, "correct1": zero, "correct5": zero, "count": zero}
    return center or zeros, ((views or zeros) if ten_crop else None)


def _save_checkpoint(loop: _Loop, epoch: int, metrics: dict, rank: int, folder: Path) -> None:
    """Rank 0 writes the training state and the epoch's report; every rank its own RNG state
    (dropout draws)."""
    if rank == 0:
        state = {
            "epoch": epoch,
            "metrics": {key: float(value) for key, value in metrics.items()},
            "model": _single_device_weights(loop.module),  # loads into any placement
            "optimizer": loop.optimizer.state_dict(),
            "schedule": loop.schedule.state_dict(),
            "config": loop.settings.config_yaml,
            "classes": list(loop.settings.classes),
        }
        torch.save(state, folder / CHECKPOINT_FILE)
        write_meta(folder, epoch, loop.settings.training_digest, loop.settings.training_fields)
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, folder / f"rng-rank{rank}.pt")


def _restore(loop: _Loop, checkpoint: ray.train.Checkpoint, rank: int) -> tuple[int, dict]:
    """Load the latest checkpoint into `loop`; returns the epoch it ended and that epoch's
    report ({} for a checkpoint written before reports were stored)."""
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / CHECKPOINT_FILE, weights_only=True, map_location="cpu")
        _load_single_device_weights(loop.module, state["model"])
        loop.optimizer.load_state_dict(state["optimizer"])
        loop.schedule.load_state_dict(state["schedule"])
        rng_file = Path(folder) / f"rng-rank{rank}.pt"
        if rng_file.exists():
            rng = torch.load(rng_file, weights_only=True)
            torch.set_rng_state(rng["cpu"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state(rng["cuda"])
    return int(state["epoch"]), state.get("metrics", {})


def _checkpoint_to_resume(settings: WorkerSettings):
    """(checkpoint, where it is) to resume from, or (None, ""): the newest complete one in the
    run's storage folder, which can be newer than the one Ray Train's controller registered (a
    worker that died right after uploading one: its report never reached the controller)."""
    stored = newest_checkpoint(settings.run_folder) if settings.run_folder else None
    if stored is not None:
        location = stored.location
        checkpoint = ray.train.Checkpoint(path=location.path, filesystem=location.fs)
        return checkpoint, redact_text(stored.uri)
    checkpoint = ray.train.get_checkpoint()  # one written before checkpoints had meta.json
    return checkpoint, (redact_text(checkpoint.path) if checkpoint is not None else "")


def _place(model: AlexNet, parallel: str, channels_last: bool):
    """(the model to train, the module whose weights are checkpointed), per `train.parallel`.

    data: DDP over the workers, one device each. towers: the paper's split, tower k on this
    worker's device k (its two GPUs, or the CPU twice). hybrid: towers in each worker, DDP across
    workers (device_ids=None: DDP over a module that spans devices).
    """
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if parallel == "data":
        module = model.to(memory_format=memory_format)
        return ray.train.torch.prepare_model(module), module
    devices = ray.train.torch.get_devices()
    module = TwoTowerAlexNet(model, (devices[0], devices[-1])).to(memory_format=memory_format)
    if parallel == "towers":
        return module, module
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=None), module


def _single_device_weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    if isinstance(module, TwoTowerAlexNet):
        return module.single_device_state_dict()
    return module.state_dict()


def _load_single_device_weights(module: torch.nn.Module, state: dict) -> None:
    if isinstance(module, TwoTowerAlexNet):
        module.load_single_device_state_dict(state)
    else:
        module.load_state_dict(state)


def _compute_options(config: TrainConfig, device: torch.device):
    """(autocast dtype or None, channels_last) for this device."""
    channels_last = device.type == "cuda" if config.channels_last is None else config.channels_last
    return autocast_dtype_for(device, config.precision), channels_last


def quiet_report_echo() -> None:
    """Ray 2.60 logs every `ray.train.report` (a whole `TrainingReport(...)` dump) at INFO through
    a logger named by its source file's path, which `LoggingConfig` does not reach: set it to
    WARNING in this worker. Our own lines report each epoch."""
    suffix = "ray/train/v2/_internal/execution/context.py"
    for name in list(logging.root.manager.loggerDict):
        if name.replace("\\", "/").endswith(suffix):
            logging.getLogger(name).setLevel(logging.WARNING)


def train_fn_per_worker(loop_config: dict) -> None:
    quiet_report_echo()
    rank_zero = ray.train.get_context().get_world_rank() == 0
    with tracking.system_metrics(loop_config.get("system_metrics") if rank_zero else None):
        _train(loop_config)


def _train(loop_config: dict) -> None:
    model_config: ModelConfig = loop_config["model"]
    optim_config: OptimizerConfig = loop_config["optim"]
    settings: WorkerSettings = loop_config["settings"]
    config = settings.train

    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    log = RankZeroPrinter(rank)
    torch.manual_seed(settings.seed)  # same initial weights on every rank

    device = ray.train.torch.get_device()
    autocast_dtype, channels_last = _compute_options(config, device)
    model, module = _place(build_model(model_config), config.parallel, channels_last)
    optimizer = build_optimizer(module, optim_config, config.global_batch_size)
    base_lr = optim_config.scaled_lr(config.global_batch_size)
    loop = _Loop(
        model=torch.compile(model) if config.compile else model,
        module=module,
        optimizer=optimizer,
        schedule=LearningRateSchedule(optim_config.schedule, base_lr, config.epochs),
        transform=loop_config["transform"],
        settings=settings,
        autocast_dtype=autocast_dtype,
        channels_last=channels_last,
        log=log,
    )
    done = 0
    checkpoint, where = _checkpoint_to_resume(settings)
    if checkpoint is not None:
        done, report = _restore(loop, checkpoint, rank)
        log(f"resumed from the checkpoint of epoch {done} ({where})")
        if report:
            # The run may have stopped after this checkpoint was saved but before its report
            # reached the callbacks (MLflow, Tune): report it again, with the checkpoint; they
            # keep what they already had of this epoch, and record the restart.
            again = {**report, "epoch": done, "resumed_from_epoch": done, "resumed_from": where}
            if rank == 0:
                with checkpoint.as_directory() as folder:
                    copy = ray.train.Checkpoint.from_directory(folder)
                    ray.train.report(again, checkpoint=copy)
            else:
                ray.train.report(again)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    precision = "bf16 autocast" if autocast_dtype else "fp32"
    if config.parallel != "data":
        log(f"{config.parallel} split: tower 0 on {module.devices[0]}, tower 1 on "
            f"{module.devices[1]}")  # fmt: skip
    log(f"{world_size} workers on {device} ({precision}"
        f"{', channels_last' if channels_last else ''}{', compiled' if config.compile else ''}), "
        f"batch {config.batch_size_per_worker} per worker ({config.global_batch_size} global), "
        f"lr {base_lr:g} ({optim_config.schedule.kind})")  # fmt: skip

    for epoch in range(done + 1, config.epochs + 1):
        lr = loop.schedule.lr(epoch)
        train_sums, seconds, waited = _run_epoch(loop, train_shard, epoch)
        train = _all_reduce_sums(train_sums, device)
        center, views = _evaluate(loop, val_shard, config.ten_crop and epoch == config.epochs)
        val = _all_reduce_sums(center, device)
        errors = error_rates(val)
        val_error = errors["val_top1_error"]
        if loop.schedule.end_epoch(val_error):
            factor = optim_config.schedule.drop_factor
            log(f"epoch {epoch}: validation error stalled; lr / {factor:g}")
        metrics = {
            "epoch": epoch,
            "train_loss": train["loss_sum"] / train["count"],
            "train_top1_error": 1 - train["correct1"] / train["count"],
            "val_loss": val["loss_sum"] / val["count"],
            **errors,
            "lr": lr,
            "lr_drops": loop.schedule.drops,
            "images_per_second": train["count"] / seconds,
            "data_wait_fraction": waited / seconds,
            "epoch_seconds": seconds,
        }
        if views is not None:  # the paper's test, after the last epoch: ten views
            metrics.update(error_rates(_all_reduce_sums(views, device), "_10crop"))
        if epoch % config.checkpoint_every and epoch != config.epochs:
            ray.train.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as folder:
            _save_checkpoint(loop, epoch, metrics, rank, Path(folder))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def resolve_use_gpu(config: TrainConfig) -> bool:
    """`train.use_gpu`, or when unset: GPUs if the cluster has enough for every worker."""
    if config.use_gpu is not None:
        return config.use_gpu
    gpus = ray.cluster_resources().get("GPU", 0)
    needed = config.num_workers * config.devices_per_worker
    if 0 < gpus < needed:
        print(f"the cluster has {gpus:g} GPU(s); {config.num_workers} workers with "
              f"{config.devices_per_worker} each need {needed}: training on CPU")  # fmt: skip
    return gpus >= needed


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
            f"{cluster_cpus:g} CPUs leaves less than data.decode_cpus ({data_cpus:g}) for the Ray "
            "Data tasks that feed them: lower train.cpus_per_worker (e.g. 0.75) or "
            "data.decode_cpus"
        )
    needed_gpus = config.num_workers * config.devices_per_worker
    if use_gpu and ray.cluster_resources().get("GPU", 0) < needed_gpus:
        raise ConfigError(
            f"train.use_gpu is true but the cluster has fewer than {needed_gpus} GPUs "
            f"({config.num_workers} workers x {config.devices_per_worker})"
        )


def fit(
    loop_config: dict,
    train_config: TrainConfig,
    datasets: dict[str, ray.data.Dataset],
    run_name: str,
    callbacks: list[ray.train.UserCallback],
    use_gpu: bool,
    storage_path: str | None = None,
    data_cpus: float | None = None,
) -> ray.train.Result:
    """Run the worker group to completion; raises when training fails.

    `storage_path` (default `train.storage_path`) holds the run's folder `<run_name>/`;
    `data_cpus` caps the CPUs the run's Ray Data streams may hold (None: whatever is free).
    """
    # Our own execution options, always: Ray Train's defaults set the deprecated
    # `exclude_resources` (a RayDeprecationWarning in every run's log)
    limits = ray.data.ExecutionResources(cpu=data_cpus) if data_cpus is not None else None
    dataset_config = ray.train.DataConfig(
        execution_options=ray.data.ExecutionOptions(resource_limits=limits)
    )
    resources = {**train_config.resources_per_worker, "CPU": train_config.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = train_config.devices_per_worker  # two for the towers
    trainer = ray.train.torch.TorchTrainer(
        train_fn_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=train_config.num_workers,
            use_gpu=use_gpu,
            resources_per_worker=resources,
        ),
        datasets=datasets,
        dataset_config=dataset_config,
        run_config=ray.train.RunConfig(
            name=run_name,  # the same name in the same storage_path resumes that run
            storage_path=str(_absolute(storage_path or train_config.storage_path)),
            callbacks=callbacks,
            failure_config=ray.train.FailureConfig(max_failures=train_config.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=train_config.keep_checkpoints),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),  # no per-report echo
        ),
    )
    return trainer.fit()


def run_folder(config: TrainConfig, run_name: str, storage_path: str | None = None) -> str:
    """Where Ray Train keeps the run `run_name`: `<storage_path>/<run_name>` (a path or URI)."""
    return f"{_absolute(storage_path or config.storage_path)}/{run_name}"


def _absolute(path: str):
    return path if "://" in path else Path(path).expanduser().resolve()
