"""The `study` section: a set of ablations, each a change of config fields measured against a
baseline over several seeds (experiments/study.py runs them; experiments/ablations.py makes the
table, whose docstring says how each `measure` is computed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from orchestrator.common.errors import shown

Value = bool | int | float | str | None
MEASURES = ("val_error", "ten_crop", "overfitting", "speed")
BASELINE = "baseline"


@dataclass(frozen=True)
class Ablation:
    overrides: dict[str, Value] = field(default_factory=dict)  # config field -> the variant's value
    measure: Literal["val_error", "ten_crop", "overfitting", "speed"] = "val_error"
    paper_top1: float | None = None  # the published change (points; `speed`: times slower)
    paper_top5: float | None = None
    paper: str = ""  # the paper's words, for the table
    threshold: float = 0.25  # `speed`: the training error to reach

    def __post_init__(self):
        if self.measure == "ten_crop" and self.overrides:
            raise ValueError("overrides: a ten_crop ablation trains nothing; allowed: {}")
        if self.measure != "ten_crop" and not self.overrides:
            raise ValueError(f"overrides: empty; a {self.measure} ablation changes a config field")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold: got {self.threshold}; allowed: 0 < threshold < 1")


@dataclass(frozen=True)
class StudyConfig:
    name: str = "study"  # the Tune experiment, the MLflow parent run, the --resume handle
    seeds: int = 2  # every trial repeated with seeds 0 .. seeds-1 (the config's seed + i)
    max_concurrent_trials: int = 2  # trials Ray Tune runs at once
    # what the data is, printed with the table beside its measured facts (classes, images, size)
    dataset_note: str = ""
    # name -> what it changes against the baseline (overrides) and the paper's number
    ablations: dict[str, Ablation] = field(default_factory=dict)

    def __post_init__(self):
        if self.seeds < 1 or self.max_concurrent_trials < 1:
            raise ValueError("seeds, max_concurrent_trials: allowed: integers >= 1")
        if BASELINE in self.ablations:
            raise ValueError(f"ablations: {shown(BASELINE)} is the study's own reference run")

    def trained(self) -> list[str]:
        """The trial groups that train: the baseline and every ablation but `ten_crop` ones."""
        return [BASELINE] + [name for name, a in self.ablations.items() if a.measure != "ten_crop"]
