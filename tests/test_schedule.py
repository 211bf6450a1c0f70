"""Learning-rate schedules and the optimizer's parameter groups."""

import math

import pytest

from workloads.alexnet.engine import OptimizerConfig, build_optimizer
from workloads.alexnet.model import ModelConfig, build_model
from workloads.alexnet.schedule import LearningRateSchedule, ScheduleConfig


def test_plateau_divides_by_ten_on_a_stalled_metric_at_most_three_times():
    schedule = LearningRateSchedule(ScheduleConfig(kind="plateau", patience=2), 0.01, epochs=90)
    errors = [0.9, 0.8, 0.7] + [0.7] * 20  # improves, then stalls for good
    lrs, drops_at = [], []
    for epoch, error in enumerate(errors, start=1):
        lrs.append(schedule.lr(epoch))
        if schedule.end_epoch(error):
            drops_at.append(epoch)
    assert drops_at == [5, 7, 9]  # patience 2 after the last improvement (epoch 3), then again
    assert schedule.drops == 3
    assert lrs[4] == pytest.approx(0.01) and lrs[5] == pytest.approx(0.001)
    assert lrs[-1] == pytest.approx(1e-5)  # three drops, never a fourth


def test_plateau_waits_while_the_metric_improves():
    schedule = LearningRateSchedule(ScheduleConfig(kind="plateau", patience=1), 0.1, epochs=10)
    assert not any(schedule.end_epoch(1 - 0.01 * e) for e in range(10))
    assert schedule.lr(10) == pytest.approx(0.1)


def test_plateau_state_survives_a_checkpoint():
    config = ScheduleConfig(kind="plateau", patience=2)
    first = LearningRateSchedule(config, 0.01, epochs=90)
    for error in (0.5, 0.6, 0.6):
        first.end_epoch(error)
    second = LearningRateSchedule(config, 0.01, epochs=90)
    second.load_state_dict(first.state_dict())
    assert second.state_dict() == first.state_dict() and second.lr(4) == first.lr(4)


def test_step_and_cosine_with_warmup():
    step = LearningRateSchedule(ScheduleConfig(kind="step", milestones=(2, 4)), 1.0, epochs=6)
    assert [step.lr(e) for e in range(1, 7)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cosine = LearningRateSchedule(ScheduleConfig(kind="cosine", warmup_epochs=1), 1.0, epochs=5)
    assert cosine.lr(1, 0.0) == 0.0 and cosine.lr(1, 0.5) == pytest.approx(0.5)
    assert cosine.lr(2, 0.0) == pytest.approx(1.0)  # warmup done, cosine starts at the top
    assert cosine.lr(4, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cosine.lr(5, 0.999) < 1e-4


def test_no_bias_decay_leaves_biases_undecayed():
    model = build_model(ModelConfig(input_size=32, stem_stride=1, width=0.125, num_classes=4))
    optimizer = build_optimizer(model, OptimizerConfig(no_bias_decay=True), 128)
    decayed, undecayed = optimizer.param_groups
    assert decayed["weight_decay"] == 5e-4 and undecayed["weight_decay"] == 0.0
    assert all(p.ndim == 1 for p in undecayed["params"]) and len(undecayed["params"]) == 8
    assert len(build_optimizer(model, OptimizerConfig(), 128).param_groups) == 1
