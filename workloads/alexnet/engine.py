"""One training step, one evaluation step and the paper's optimizer (pure torch: no Ray).

Steps return tensors of sums (not Python numbers) so that a loop can accumulate on the device
without a host sync per step, and so that workers can all-reduce the sums before dividing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from workloads.alexnet.config import OptimizerConfig


def build_optimizer(
    model: nn.Module, config: OptimizerConfig, global_batch_size: int
) -> torch.optim.SGD:
    """SGD over all parameters; biases (and any 1-d parameter) undecayed if `no_bias_decay`."""
    if config.no_bias_decay:
        decayed = [p for p in model.parameters() if p.ndim > 1]
        undecayed = [p for p in model.parameters() if p.ndim <= 1]
        groups = [{"params": decayed}, {"params": undecayed, "weight_decay": 0.0}]
    else:
        groups = [{"params": list(model.parameters())}]
    return torch.optim.SGD(
        groups,
        lr=config.scaled_lr(global_batch_size),
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list[torch.Tensor]:
    """Number of samples whose label is among the top-k logits, for each k (k capped at C)."""
    max_k = min(max(ks), logits.shape[1])
    top = logits.topk(max_k, dim=1).indices  # (B, max_k)
    hits = top == labels[:, None]  # (B, max_k)
    return [hits[:, : min(k, max_k)].any(dim=1).sum() for k in ks]


def autocast_dtype_for(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The one precision rule, for training, evaluation and the benchmarks: bf16 autocast when
    asked for (`bf16`), or by default (`auto`) on a CUDA device that supports it; else fp32."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision for the forward pass and the loss, or nothing when `dtype` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Forward, backward, SGD update. Returns detached sums over the batch.

    `autocast_dtype=torch.bfloat16` runs the forward pass in bf16 (weights and their updates
    stay fp32; bf16 needs no loss scaling).
    """
    model.train()
    with _autocast(images.device, autocast_dtype):
        logits = model(images).float()  # (B, num_classes)
        loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    (correct1,) = topk_correct(logits.detach(), labels, ks=(1,))
    n = labels.shape[0]
    return {
        "loss_sum": loss.detach() * n,
        "correct1": correct1,
        "count": torch.tensor(n, device=labels.device),
    }


@torch.no_grad()
def eval_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Centre-crop (or any single-view) evaluation of one batch. Returns sums over the batch."""
    model.eval()
    with _autocast(images.device, autocast_dtype):
        logits = model(images).float()  # (B, num_classes)
    return _eval_sums(F.cross_entropy(logits, labels, reduction="sum"), logits, labels)


@torch.no_grad()
def eval_step_multiview(
    model: nn.Module,
    views: torch.Tensor,
    labels: torch.Tensor,
    autocast_dtype: torch.dtype | None = None,
) -> dict:
    """Ten-crop evaluation: views (B, V, 3, C, C); the softmax is averaged over the V views."""
    model.eval()
    b, v = views.shape[:2]
    with _autocast(views.device, autocast_dtype):
        logits = model(views.flatten(0, 1)).float()  # (B * V, num_classes)
    probs = logits.softmax(dim=1).view(b, v, -1).mean(dim=1)  # (B, num_classes)
    loss = F.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum")
    return _eval_sums(loss, probs, labels)


def _eval_sums(loss_sum: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> dict:
    """An evaluation step's sums: loss, top-1 and top-5 hits by `scores` (B, classes), count."""
    correct1, correct5 = topk_correct(scores, labels, ks=(1, 5))
    count = torch.tensor(labels.shape[0], device=labels.device)
    return {"loss_sum": loss_sum, "correct1": correct1, "correct5": correct5, "count": count}


def accumulate(total: dict[str, torch.Tensor] | None, step: dict[str, torch.Tensor]):
    """Add one step's sums into the running totals (created on first use)."""
    if total is None:
        return {k: v.detach().clone().to(torch.float64) for k, v in step.items()}
    for k, v in step.items():
        total[k] += v.to(torch.float64)
    return total


def timed(batches: Iterable, sync: Callable[[], None] | None = None) -> Iterator[tuple]:
    """Yields (batch, seconds spent waiting for it): the data feed's share of an epoch.
    `sync` (e.g. `torch.cuda.synchronize`) makes the wait exclude queued device work."""
    batches = iter(batches)
    while True:
        before = time.perf_counter()
        batch = next(batches, None)
        if sync is not None:
            sync()
        waited = time.perf_counter() - before
        if batch is None:
            return
        yield batch, waited


def evaluate(
    model: nn.Module,
    batches,
    transform,
    autocast_dtype: torch.dtype | None = None,
    ten_crop: bool = False,
    channels_last: bool = False,
):
    """Sums over `batches` of (uint8 images (B, S, S, 3), labels): the centre crop, and with
    `ten_crop` also the paper's ten-crop average, in one pass. `transform` cuts the views
    (`BatchTransform.center`, `.ten_crop`). Returns (centre sums, ten-crop sums or None); the
    centre sums are None when there was no batch."""
    center = views = None
    for images, labels in batches:
        crops = transform.center(images)  # (B, 3, C, C)
        crops = crops if channels_last else crops.contiguous()
        center = accumulate(center, eval_step(model, crops, labels, autocast_dtype))
        if ten_crop:
            step = eval_step_multiview(model, transform.ten_crop(images), labels, autocast_dtype)
            views = accumulate(views, step)
    return center, views


def error_rates(sums: dict) -> dict[str, float]:
    """Top-1 and top-5 error on the validation set from evaluation sums (tensors or floats)."""
    count = float(sums["count"])
    return {
        "val_top1_error": 1 - float(sums["correct1"]) / count,
        "val_top5_error": 1 - float(sums["correct5"]) / count,
    }
