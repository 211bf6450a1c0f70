"""What a training run reports every epoch: one typed record (rank 0's `ray.train.report`),
and the metric names everyone else reads it by.

The worker loop builds an `EpochMetrics` and reports `as_report()`; the MLflow callback, the
console line, the run's summary table, a sweep's `sweep.metric` and a study's table all read the
same fields, by the names below. Every value is minimised except the throughput and
bookkeeping entries.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float  # mean cross-entropy over the epoch's training batches
    train_top1_error: float
    val_loss: float  # centre crop
    val_top1_error: float
    val_top5_error: float
    lr: float  # at the epoch's start (per-step schedules move within it)
    lr_drops: int  # the paper's /10 drops so far (plateau schedule)
    images_per_second: float  # training images over the epoch's wall time, all workers
    data_wait_fraction: float  # of the epoch's wall time spent waiting for batches (rank 0)
    epoch_seconds: float
    # the paper's test, after the last epoch with train.ten_crop: ten views averaged
    val_top1_error_10crop: float | None = None
    val_top5_error_10crop: float | None = None

    def as_report(self) -> dict[str, float]:
        """The fields that have values: what `ray.train.report` sends and MLflow logs."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_report(cls, report: dict) -> "EpochMetrics":
        """The record in a report (which may carry a restart's keys too: `restart_report`)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in report.items() if k in names})

    def logged(self) -> dict[str, float]:
        """The values MLflow logs at step `epoch`: every field with a value except the epoch."""
        return {k: float(v) for k, v in self.as_report().items() if k != EPOCH}

    def line(self) -> str:
        """The console's line for the epoch."""
        return (
            f"epoch {self.epoch:>3}  train loss {self.train_loss:.4f}  "
            f"val top-1 err {self.val_top1_error:.4f}  top-5 err {self.val_top5_error:.4f}  "
            f"lr {self.lr:.5f}  {self.images_per_second:.0f} images/s  "
            f"data wait {self.data_wait_fraction:.0%}"
        )


def ten_crop(name: str) -> str:
    """The name of `name` measured with the paper's ten-crop test (`val_top1_error_10crop`)."""
    return f"{name}_10crop"


# The names of EpochMetrics' fields, for those who read them back (tests/test_pipeline.py checks)
EPOCH = "epoch"
TRAIN_LOSS, TRAIN_TOP1_ERROR = "train_loss", "train_top1_error"
VAL_LOSS, VAL_TOP1_ERROR, VAL_TOP5_ERROR = "val_loss", "val_top1_error", "val_top5_error"
IMAGES_PER_SECOND = "images_per_second"
TEN_CROP_METRICS = (ten_crop(VAL_TOP1_ERROR), ten_crop(VAL_TOP5_ERROR))  # train.ten_crop
_FIELDS = tuple(f.name for f in dataclasses.fields(EpochMetrics))
EPOCH_METRICS = tuple(n for n in _FIELDS if n != EPOCH and n not in TEN_CROP_METRICS)
# Logged at every epoch, so the epochs a run has logged are its steps of this metric
EPOCHS_METRIC = VAL_TOP1_ERROR
# What a sweep may minimise: the losses and errors
SWEEP_METRICS = (VAL_TOP1_ERROR, VAL_TOP5_ERROR, VAL_LOSS, TRAIN_LOSS, TRAIN_TOP1_ERROR)
# The run's summary table at the end: (metric, column title, format)
SUMMARY_COLUMNS = (
    (TRAIN_LOSS, "train loss", "{:>10.4f}"),
    (VAL_TOP1_ERROR, "val top-1 err", "{:>13.4f}"),
    (VAL_TOP5_ERROR, "val top-5 err", "{:>13.4f}"),
    (IMAGES_PER_SECOND, "images/s", "{:>8.0f}"),
)


def restart_report(report: dict, epoch: int, where: str) -> dict:
    """A resumed worker group's first report: the checkpoint's epoch reported again, marked
    with where it resumed from (read back by `restart_of`)."""
    return {**report, EPOCH: epoch, "resumed_from_epoch": epoch, "resumed_from": where}


def restart_of(report: dict) -> tuple[int, str] | None:
    """(epoch, checkpoint location) when `report` is a resumed worker group's first, else None."""
    if "resumed_from_epoch" not in report:
        return None
    return int(report["resumed_from_epoch"]), str(report.get("resumed_from", "?"))


def with_ten_crop_names(errors: dict[str, float]) -> dict[str, float]:
    """Error rates measured with the ten-crop test, under their ten-crop names."""
    return {ten_crop(name): value for name, value in errors.items()}
