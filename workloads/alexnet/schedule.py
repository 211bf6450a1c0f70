"""Learning-rate schedules: the paper's rule automated, step, cosine with linear warmup (pure).

`plateau` is the paper's: divide the learning rate by 10 when the validation error has not
improved for `patience` epochs, at most `max_drops` times (the 2012 run dropped three times, at
epochs ~25, 51 and 79, and stopped at ~90). `step` divides by 10 at fixed epochs; `cosine`
anneals to zero after a linear warmup.

A schedule gives the learning rate for a point in training (epoch, and progress within it), so
the training loop sets it before every step; `end_epoch` feeds it the validation error (only
`plateau` uses it); `state_dict` and `load_state_dict` carry it through checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ScheduleConfig:
    # plateau: /drop_factor when validation error stalls (the paper); step: at fixed epochs;
    # cosine: down to 0 over train.epochs; constant: never
    kind: Literal["constant", "plateau", "step", "cosine"] = "plateau"
    patience: int = 3  # plateau: epochs without a better validation error before a drop
    max_drops: int = 3  # plateau: the paper's three
    drop_factor: float = 10.0  # plateau and step: lr divided by this at each drop
    min_improvement: float = 0.0  # plateau: what counts as better (absolute, in error)
    milestones: tuple[int, ...] = (30, 60, 80)  # step: epochs after which the lr drops
    warmup_epochs: float = 0.0  # linear warmup from 0 (any schedule; cosine's usual companion)

    def __post_init__(self):
        if self.patience < 1 or self.max_drops < 0:
            raise ValueError("patience: allowed >= 1; max_drops: allowed >= 0")
        if not self.drop_factor > 1:
            raise ValueError(f"drop_factor: got {self.drop_factor}; allowed: a number > 1")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs: got {self.warmup_epochs}; allowed: >= 0")
        if list(self.milestones) != sorted(self.milestones) or any(m < 1 for m in self.milestones):
            raise ValueError(f"milestones: got {list(self.milestones)}; allowed: increasing, >= 1")


class LearningRateSchedule:
    def __init__(self, config: ScheduleConfig, base_lr: float, epochs: int):
        self.config, self.base_lr, self.epochs = config, base_lr, epochs
        self.drops = 0  # plateau: drops so far
        self.best_error = math.inf
        self.epochs_since_best = 0

    def lr(self, epoch: int, progress: float = 0.0) -> float:
        """The learning rate at `progress` (0..1) through epoch `epoch` (1-based)."""
        config = self.config
        elapsed = epoch - 1 + progress  # epochs done, fractional
        if config.kind == "plateau":
            factor = config.drop_factor**-self.drops
        elif config.kind == "step":
            passed = sum(1 for m in config.milestones if epoch > m)
            factor = config.drop_factor**-passed
        elif config.kind == "cosine":
            span = max(self.epochs - config.warmup_epochs, 1e-9)
            done = min(max(elapsed - config.warmup_epochs, 0.0) / span, 1.0)
            factor = 0.5 * (1 + math.cos(math.pi * done))
        else:
            factor = 1.0
        if elapsed < config.warmup_epochs:
            factor *= elapsed / config.warmup_epochs
        return self.base_lr * factor

    def end_epoch(self, val_error: float) -> bool:
        """Record an epoch's validation error; True when the plateau rule drops the lr."""
        if self.config.kind != "plateau":
            return False
        if val_error < self.best_error - self.config.min_improvement:
            self.best_error, self.epochs_since_best = val_error, 0
            return False
        self.epochs_since_best += 1
        if self.epochs_since_best >= self.config.patience and self.drops < self.config.max_drops:
            self.drops += 1
            self.epochs_since_best = 0  # a fresh wait at the new learning rate
            return True
        return False

    def state_dict(self) -> dict:
        return {
            "drops": self.drops,
            "best_error": self.best_error,
            "epochs_since_best": self.epochs_since_best,
        }

    def load_state_dict(self, state: dict) -> None:
        self.drops = int(state["drops"])
        self.best_error = float(state["best_error"])
        self.epochs_since_best = int(state["epochs_since_best"])
