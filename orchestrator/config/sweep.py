"""The `sweep` section: what a sweep searches (the space, as YAML distributions over config
fields), how (search algorithm, scheduler), what it minimises, and where its best model goes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from orchestrator.common.errors import shown
from orchestrator.tracking.metrics import SWEEP_METRICS, VAL_TOP1_ERROR

DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform")
Value = float | str | bool


@dataclass(frozen=True)
class SweepConfig:
    name: str = "sweep"  # the Tune experiment, the MLflow parent run, the --resume handle
    search: Literal["random", "grid", "tpe"] = "random"  # tpe: Optuna
    scheduler: Literal["fifo", "asha"] = "asha"  # asha stops poor trials early
    metric: str = VAL_TOP1_ERROR  # minimised
    num_samples: int = 8  # trials (random, tpe); repeats of the whole grid (grid)
    max_concurrent_trials: int = 2  # trials Ray Tune runs at once
    grace_period: int = 1  # asha: epochs every trial runs before it may be stopped
    reduction_factor: int = 2  # asha: keep the best 1/reduction_factor at each rung
    register_model: str | None = "alexnet"  # the best model's name in the registry; None: off
    # the alias the best model's new version takes when it beats the version holding it on
    # the same validation data (by `metric`); otherwise it is registered without it
    register_alias: str = "best"
    # config field -> one distribution: {grid: [...]}, {choice: [...]}, {uniform: [lo, hi]},
    # {loguniform: [lo, hi]}
    space: dict[str, dict[str, tuple[Value, ...]]] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("num_samples", "max_concurrent_trials", "grace_period"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: got {getattr(self, name)}; allowed: an integer >= 1")
        if self.metric not in SWEEP_METRICS:
            raise ValueError(
                f"metric: got {shown(self.metric)}; allowed: {', '.join(SWEEP_METRICS)} "
                "(minimised; reported by every training epoch)"
            )
        if self.reduction_factor < 2:
            raise ValueError(f"reduction_factor: got {self.reduction_factor}; allowed: >= 2")
        for key, spec in self.space.items():
            if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
                raise ValueError(
                    f"space.{key}: got {shown(spec)}; allowed: one of "
                    f"{', '.join(DISTRIBUTIONS)} "
                    "with its values, e.g. {loguniform: [0.001, 0.1]}"
                )
            ((kind, values),) = spec.items()
            if kind in ("uniform", "loguniform"):
                if len(values) != 2 or not all(isinstance(v, float) for v in values):
                    raise ValueError(f"space.{key}.{kind}: allowed: [low, high] numbers")
                if not values[0] < values[1] or (kind == "loguniform" and values[0] <= 0):
                    allowed = "0 < low < high" if kind == "loguniform" else "low < high"
                    raise ValueError(f"space.{key}.{kind}: got {list(values)}; allowed: {allowed}")
            elif not values:
                raise ValueError(f"space.{key}.{kind}: allowed: a non-empty list")
            if self.search == "grid" and kind in ("uniform", "loguniform"):
                raise ValueError(
                    f"space.{key}: a {kind} range cannot be searched on a grid; use grid or "
                    "choice values, or sweep.search: random or tpe"
                )
