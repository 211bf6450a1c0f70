"""The training loop every Ray Train worker runs: set up, train an epoch, evaluate, report.

`train_fn_per_worker` builds the model from the driver's `WorkerPlan`, places it
(`workloads.alexnet.placement`) and wraps it in DDP, consumes its shard of the Ray Data streams,
augments on its device, and reports all-reduced `EpochMetrics` with `ray.train.report`, with a
checkpoint every `train.checkpoint_every` epochs. After a failure Ray Train restarts the
workers, which resume from the newest complete checkpoint (training/checkpoints.py).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from orchestrator.common.ray_cluster import quiet_report_echo
from orchestrator.data.streams import shuffle_options
from orchestrator.tracking.metrics import (
    VAL_TOP1_ERROR,
    EpochMetrics,
    restart_report,
    with_ten_crop_names,
)
from orchestrator.tracking.steps import (
    IMAGES_PER_SECOND,
    LR,
    TRAIN_LOSS,
    StepLogger,
    step_metrics,
)
from orchestrator.tracking.system_metrics import sampling_node, system_metrics
from orchestrator.training.checkpoints import (
    TrainingState,
    checkpoint_to_resume,
    restore_checkpoint,
    save_checkpoint,
)
from orchestrator.training.config import WorkerPlan
from orchestrator.training.console import RankZeroConsole
from workloads.alexnet.engine import (
    accumulate,
    autocast_dtype_for,
    build_optimizer,
    error_rates,
    evaluate,
    set_lr,
    timed,
    train_step,
)
from workloads.alexnet.model import build_model
from workloads.alexnet.placement import Placement
from workloads.alexnet.schedule import LearningRateSchedule


@dataclass
class _Loop:
    """The worker's training state and how it computes (one object, passed to the verbs)."""

    model: torch.nn.Module  # as trained (DDP-wrapped, maybe compiled)
    state: TrainingState  # what checkpoints hold: placement (weights), optimizer, schedule
    plan: WorkerPlan
    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    console: RankZeroConsole
    steps: StepLogger | None = None  # rank 0 logs the live curves (tracking/steps.py)
    world_size: int = 1

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        return images if self.channels_last else images.contiguous()


def _all_reduce_sums(sums: dict[str, torch.Tensor], device: torch.device) -> dict[str, float]:
    """Sum each entry over all workers (one collective for the whole dict)."""
    keys = sorted(sums)
    packed = torch.stack([sums[k].to(device=device, dtype=torch.float64) for k in keys])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(packed)
    return dict(zip(keys, packed.tolist()))


def _run_epoch(loop: _Loop, shard, epoch: int):
    """One pass over this worker's training shard; returns sums, seconds and seconds waiting."""
    plan, schedule = loop.plan, loop.state.schedule
    rank = ray.train.get_context().get_world_rank()
    batches = plan.feed.batches(
        shard,
        plan.train.batch_size_per_worker,
        loop.device,
        plan.prefetch_batches,
        pin_memory=plan.pin_memory,
        drop_last=True,
        shuffle=shuffle_options(plan.shuffle_rows, plan.seed, epoch, rank),
    )
    bar = loop.console.epoch_bar(epoch, plan.steps_per_epoch * plan.train.global_batch_size)
    every = plan.train.log_every_n_steps
    if loop.steps is None and (bar is not None or not loop.console.enabled):
        every = 0  # nothing to log or print: no sync with the device for it
    sums, waited, step = None, 0.0, 0
    start = time.perf_counter()
    point = (0.0, 0.0, start)  # loss sum, images, time at the last step point
    for batch, wait in timed(batches):
        waited += wait
        lr = schedule.lr(epoch, step / plan.steps_per_epoch)
        set_lr(loop.state.optimizer, lr)
        images = loop.inputs(plan.transform.train(batch["image"], batch["id"], epoch))
        result = train_step(
            loop.model,
            loop.state.optimizer,
            images,
            batch["label"],
            autocast_dtype=loop.autocast_dtype,
        )
        sums = accumulate(sums, result)
        step += 1
        if bar is not None:
            bar.update(plan.train.global_batch_size)  # every worker trains a batch per step
        if not every or step % every:
            continue
        loss_sum, count, now = sums["loss_sum"].item(), sums["count"].item(), time.perf_counter()
        if loop.steps is not None:  # the step since the last point, on the global step axis
            loop.steps.log(
                (epoch - 1) * plan.steps_per_epoch + step,
                {
                    TRAIN_LOSS: (loss_sum - point[0]) / (count - point[1]),
                    LR: lr,
                    IMAGES_PER_SECOND: (count - point[1]) * loop.world_size / (now - point[2]),
                },
            )
        point = (loss_sum, count, now)
        if bar is None:
            loop.console(f"epoch {epoch} step {step}: running train loss {loss_sum / count:.4f}")
    if bar is not None:
        bar.close()
    if sums is None:
        raise RuntimeError(
            f"a training shard had fewer than {plan.train.batch_size_per_worker} images: "
            "lower train.global_batch_size or use more training data"
        )
    return sums, time.perf_counter() - start, waited


def _evaluate(loop: _Loop, shard, ten_crop: bool):
    """All-reduced sums over the validation shards: (centre crop, ten-crop average or None).
    An empty shard contributes zeros: every rank joins the same all-reduces."""
    batches = (
        (batch["image"], batch["label"])
        for batch in loop.plan.feed.batches(
            shard,
            loop.plan.train.batch_size_per_worker,
            loop.device,
            loop.plan.prefetch_batches,
            pin_memory=loop.plan.pin_memory,
        )
    )
    center, views = evaluate(
        loop.model, batches, loop.plan.transform, loop.autocast_dtype, ten_crop, loop.channels_last
    )
    zero = torch.zeros((), dtype=torch.float64)
    zeros = {"loss_sum": zero, "correct1": zero, "correct5": zero, "count": zero}
    center = _all_reduce_sums(center or zeros, loop.device)
    return center, (_all_reduce_sums(views or zeros, loop.device) if ten_crop else None)


def train_fn_per_worker(config: dict) -> None:
    """Ray Train's entry point: `config` is `{"plan": WorkerPlan}` (TorchTrainer takes a dict)."""
    quiet_report_echo()
    plan: WorkerPlan = config["plan"]
    context = ray.train.get_context()
    rank_zero = context.get_world_rank() == 0
    samples, node_id = sampling_node(
        context.get_local_rank(),
        context.get_node_rank(),
        context.get_world_size(),
        context.get_local_world_size(),
    )
    with (
        system_metrics(plan.system_metrics if samples else None, node_id),
        step_metrics(plan.step_metrics if rank_zero else None) as steps,
    ):
        _train(plan, steps)


def _setup(plan: WorkerPlan, rank: int) -> _Loop:
    """The model placed on this worker's devices (DDP across workers), its optimizer and
    schedule, and how it computes."""
    config = plan.train
    torch.manual_seed(plan.seed)  # same initial weights on every rank
    device = ray.train.torch.get_device()
    channels_last = device.type == "cuda" if config.channels_last is None else config.channels_last
    towers = config.parallel != "data"
    devices = ray.train.torch.get_devices() if towers else [device]
    placement = Placement(build_model(plan.model), devices, towers, channels_last)
    if config.parallel == "data":
        model = ray.train.torch.prepare_model(placement.module)
    elif config.parallel == "hybrid":  # DDP over a module that spans devices: device_ids=None
        model = torch.nn.parallel.DistributedDataParallel(placement.module, device_ids=None)
    else:
        model = placement.module
    base_lr = plan.optim.scaled_lr(config.global_batch_size)
    state = TrainingState(
        placement=placement,
        optimizer=build_optimizer(placement.module, plan.optim, config.global_batch_size),
        schedule=LearningRateSchedule(plan.optim.schedule, base_lr, config.epochs),
    )
    return _Loop(
        model=torch.compile(model) if config.compile else model,
        state=state,
        plan=plan,
        device=device,
        autocast_dtype=autocast_dtype_for(device, config.precision),
        channels_last=channels_last,
        console=RankZeroConsole(rank, plan.progress_bar, plan.log_level),
    )


def _resume(loop: _Loop, rank: int) -> int:
    """Restore the newest checkpoint, if any; returns the epochs it holds (0: a fresh start)."""
    checkpoint, where = checkpoint_to_resume(loop.plan)
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:  # fetched once: restored, and reported again
        done, report = restore_checkpoint(Path(folder), rank, loop.state)
        loop.console(f"resumed from the checkpoint of epoch {done} ({where})")
        if report:
            # The run may have stopped after this checkpoint was saved but before its report
            # reached the callbacks (MLflow, Tune): report it again, with the checkpoint; they
            # keep what they already had of this epoch, and record the restart.
            again = restart_report(report, done, where)
            copy = ray.train.Checkpoint.from_directory(folder) if rank == 0 else None
            ray.train.report(again, checkpoint=copy)
    return done


def _describe(loop: _Loop, world_size: int) -> str:
    config, plan = loop.plan.train, loop.plan
    precision = "bf16 autocast" if loop.autocast_dtype else "fp32"
    options = [precision] + ["channels_last"] * loop.channels_last + ["compiled"] * config.compile
    split = (
        f"{config.parallel} split: {loop.state.placement.describe()}\n"
        if config.parallel != "data"
        else ""
    )
    return (
        f"{split}{world_size} workers on {loop.device} ({', '.join(options)}), batch "
        f"{config.batch_size_per_worker} per worker ({config.global_batch_size} global), lr "
        f"{plan.optim.scaled_lr(config.global_batch_size):g} ({plan.optim.schedule.kind})"
    )


def _epoch(loop: _Loop, shards: tuple, epoch: int) -> EpochMetrics:
    """Train one epoch, evaluate, step the schedule; the epoch's metrics, all workers'."""
    config, schedule = loop.plan.train, loop.state.schedule
    lr = schedule.lr(epoch)
    train_sums, seconds, waited = _run_epoch(loop, shards[0], epoch)
    train = _all_reduce_sums(train_sums, loop.device)
    center, views = _evaluate(loop, shards[1], config.ten_crop and epoch == config.epochs)
    errors = error_rates(center)
    if schedule.end_epoch(errors[VAL_TOP1_ERROR]):
        loop.console(
            f"epoch {epoch}: validation error stalled; "
            f"lr / {loop.plan.optim.schedule.drop_factor:g}"
        )
    ten_crop = with_ten_crop_names(error_rates(views)) if views is not None else {}
    return EpochMetrics(
        epoch=epoch,
        train_loss=train["loss_sum"] / train["count"],
        train_top1_error=1 - train["correct1"] / train["count"],
        val_loss=center["loss_sum"] / center["count"],
        **errors,
        lr=lr,
        lr_drops=schedule.drops,
        images_per_second=train["count"] / seconds,
        data_wait_fraction=waited / seconds,
        epoch_seconds=seconds,
        **ten_crop,  # the paper's test, after the last epoch: ten views
    )


def _train(plan: WorkerPlan, steps: StepLogger | None) -> None:
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    loop = _setup(plan, rank)
    loop.steps, loop.world_size = steps, world_size
    done = _resume(loop, rank)
    loop.console(_describe(loop, world_size))
    shards = (ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val"))
    config = plan.train
    for epoch in range(done + 1, config.epochs + 1):
        metrics = _epoch(loop, shards, epoch).as_report()
        if epoch % config.checkpoint_every and epoch != config.epochs:
            ray.train.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(Path(folder), rank, epoch, metrics, loop.state, plan)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
