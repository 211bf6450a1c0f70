"""The names of what a training run reports every epoch (rank 0's `ray.train.report`).

The training loop reports exactly these; MLflow, the console and a sweep's `sweep.metric` use
them. Every one is minimised except the throughput and bookkeeping entries.
"""

from __future__ import annotations

EPOCH_METRICS = (
    "train_loss",
    "train_top1_error",
    "val_loss",
    "val_top1_error",
    "val_top5_error",
    "lr",
    "lr_drops",
    "images_per_second",
    "data_wait_fraction",
    "epoch_seconds",
)
TEN_CROP_METRICS = ("val_top1_error_10crop", "val_top5_error_10crop")  # last epoch, train.ten_crop
# What a sweep may minimise: the losses and errors
SWEEP_METRICS = ("val_top1_error", "val_top5_error", "val_loss", "train_loss", "train_top1_error")
