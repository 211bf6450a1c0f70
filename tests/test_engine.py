"""Training and evaluation steps and the paper's optimizer, in plain torch."""

import pytest
import torch

from workloads.alexnet.engine import (
    OptimizerConfig,
    accumulate,
    build_optimizer,
    eval_step,
    eval_step_multiview,
    topk_correct,
    train_step,
)
from workloads.alexnet.model import ModelConfig, build_model

TINY = ModelConfig(input_size=32, stem_stride=1, width=0.125, num_classes=4, init="kaiming")


def test_lr_scales_linearly_with_the_global_batch():
    model = build_model(TINY)
    assert build_optimizer(model, OptimizerConfig(), 128).param_groups[0]["lr"] == 0.01
    optimizer = build_optimizer(model, OptimizerConfig(), 256)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.02, 0.9, 5e-4)


def test_topk_correct():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.05], [0.3, 0.2, 0.5]])
    labels = torch.tensor([1, 2, 0])
    top1, top2 = topk_correct(logits, labels, ks=(1, 2))
    assert (top1.item(), top2.item()) == (1, 2)
    (top5,) = topk_correct(logits, labels, ks=(5,))  # k capped at the class count
    assert top5.item() == 3


def test_train_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = build_model(TINY)
    optimizer = build_optimizer(model, OptimizerConfig(lr=0.1), 16)
    images, labels = torch.randn(16, 3, 32, 32), torch.arange(16) % 4
    losses = [
        train_step(model, optimizer, images, labels)["loss_sum"].item() / 16 for _ in range(30)
    ]
    assert losses[-1] < 0.5 * losses[0]


def test_eval_sums_and_accumulate():
    torch.manual_seed(0)
    model = build_model(TINY)
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1])
    total = None
    for part in (slice(0, 4), slice(4, 6)):
        total = accumulate(total, eval_step(model, images[part], labels[part]))
    whole = eval_step(model, images, labels)
    assert total["count"].item() == 6
    for key in ("loss_sum", "correct1", "correct5"):
        assert total[key].item() == pytest.approx(whole[key].item(), rel=1e-5)


def test_multiview_eval_averages_the_softmax():
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    images, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2])
    same_views = images[:, None].expand(3, 10, 3, 32, 32)
    single, multi = eval_step(model, images, labels), eval_step_multiview(model, same_views, labels)
    assert multi["loss_sum"].item() == pytest.approx(single["loss_sum"].item(), rel=1e-4)
    views = torch.randn(3, 2, 3, 32, 32)
    probs = model(views.flatten(0, 1)).softmax(1).view(3, 2, -1).mean(1)
    expected = torch.nn.functional.nll_loss(probs.log(), labels, reduction="sum")
    assert eval_step_multiview(model, views, labels)["loss_sum"].item() == pytest.approx(
        expected.item(), rel=1e-5
    )


def test_bf16_autocast_step_matches_fp32_closely_and_keeps_fp32_weights():
    torch.manual_seed(0)
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    results = {}
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(0)
        model = build_model(TINY)
        optimizer = build_optimizer(model, OptimizerConfig(lr=0.05), 8)
        step = train_step(model, optimizer, images, labels, autocast_dtype=dtype)
        results[dtype] = (step["loss_sum"].item(), model)
    assert results[torch.bfloat16][0] == pytest.approx(results[None][0], rel=0.02)
    assert all(p.dtype == torch.float32 for p in results[torch.bfloat16][1].parameters())


def test_one_evaluation_routine_and_one_precision_rule():
    from orchestrator.tracking.metrics import with_ten_crop_names
    from workloads.alexnet.engine import autocast_dtype_for, error_rates, evaluate
    from workloads.alexnet.transforms import BatchTransform

    cpu = torch.device("cpu")
    assert autocast_dtype_for(cpu) is None and autocast_dtype_for(cpu, "fp32") is None
    assert autocast_dtype_for(cpu, "bf16") is torch.bfloat16

    torch.manual_seed(0)
    model = build_model(ModelConfig(input_size=32, stem_stride=1, width=0.125, num_classes=7))
    transform = BatchTransform(crop_size=32, mean_image=None, seed=0)
    images = torch.randint(0, 256, (2, 6, 40, 40, 3), dtype=torch.uint8)
    labels = torch.randint(0, 7, (2, 6))
    center, views = evaluate(model, zip(images, labels), transform, ten_crop=True)
    assert center["count"] == views["count"] == 12
    one = eval_step_multiview(model, transform.ten_crop(images[0]), labels[0])
    two = eval_step_multiview(model, transform.ten_crop(images[1]), labels[1])
    assert views["correct1"] == one["correct1"] + two["correct1"]
    rates = error_rates({"correct1": 3, "correct5": 9, "count": 12})
    assert rates == {"val_top1_error": 0.75, "val_top5_error": 0.25}
    assert with_ten_crop_names(rates) == {
        "val_top1_error_10crop": 0.75,
        "val_top5_error_10crop": 0.25,
    }
    assert evaluate(model, [], transform) == (None, None)


def test_rank_zero_lines_follow_the_drivers_log_level(capfd):
    """A worker's progress lines (to its real stdout, which Ray relays) show on rank 0 only,
    and only when the driver's level lets its diagnostics show (-q hides them)."""
    import logging

    from orchestrator.training.console import RankZeroConsole

    RankZeroConsole(0, False, logging.INFO)("epoch 1 step 4: shown")
    RankZeroConsole(1, False, logging.INFO)("epoch 1 step 4: not rank 0")
    RankZeroConsole(0, False, logging.WARNING)("epoch 1 step 4: hidden by -q")
    RankZeroConsole(0, False, logging.WARNING)("a warning shows", logging.WARNING)
    assert capfd.readouterr().out.splitlines() == ["epoch 1 step 4: shown", "a warning shows"]
