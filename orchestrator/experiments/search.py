"""A sweep's search in Ray Tune's terms: the space's distributions, the search algorithm and the
scheduler of a `SweepConfig` (config/sweep.py)."""

from __future__ import annotations

import json

from ray import tune
from ray.tune.schedulers import ASHAScheduler

from orchestrator.config.sweep import SweepConfig
from orchestrator.tracking.metrics import EPOCH


def sample_overrides(space: dict) -> list[str]:
    """One `key=value` override per swept field (the first value of each), to validate keys."""
    overrides = []
    for key, spec in space.items():
        ((kind, values),) = spec.items()
        overrides.append(f"{key}={json.dumps(values[0])}")
    return overrides


def param_space(space: dict, search: str) -> dict:
    tune_space = {}
    for key, spec in space.items():
        ((kind, values),) = spec.items()
        if kind == "grid" or (kind == "choice" and search == "grid"):
            tune_space[key] = tune.grid_search(list(values))
        elif kind == "choice":
            tune_space[key] = tune.choice(list(values))
        elif kind == "uniform":
            tune_space[key] = tune.uniform(*values)
        else:
            tune_space[key] = tune.loguniform(*values)
    return tune_space


def trial_count(config: SweepConfig) -> int:
    """How many trials the sweep runs: `num_samples` times the size of its grid (Tune repeats
    the whole grid for every sample)."""
    count = config.num_samples
    for spec in config.space.values():
        ((kind, values),) = spec.items()
        if kind == "grid" or (kind == "choice" and config.search == "grid"):
            count *= len(values)
    return count


def search_algorithm(config: SweepConfig):
    if config.search == "tpe":
        from ray.tune.search.optuna import OptunaSearch  # imports Optuna: only when it is used

        return OptunaSearch(metric=config.metric, mode="min")
    return None  # random sampling and grids: Tune's own variant generator


def scheduler(config: SweepConfig, epochs: int):
    if config.scheduler == "fifo":
        return None
    return ASHAScheduler(
        time_attr=EPOCH,  # the trial's reported epoch (a resumed trial reports its last again)
        max_t=epochs,
        grace_period=min(config.grace_period, epochs),
        reduction_factor=config.reduction_factor,
    )
