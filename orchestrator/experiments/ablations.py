"""The table a study's ablations (the `study` section, config/study.py) make: per ablation the
published change, the measured one over seeds, whether the signs agree and whether the seeds
settle it.

Pure: no Ray, no MLflow. experiments/study.py runs the trials and feeds their histories here.

How each kind of ablation is measured, variant against the baseline trained with the same seed
(a positive number means the variant is worse, as the paper's numbers read):
- `val_error`: the last epoch's validation top-1 and top-5 error, in points;
- `ten_crop`: no training of its own: the baseline's centre-crop error minus its ten-crop error
  (needs `train.ten_crop: true`);
- `overfitting`: the last epoch's train-validation gap (val top-1 error minus training top-1
  error), in points;
- `speed`: how many times the epochs the baseline needs to reach a training error of
  `threshold` the variant needs (interpolated between epochs; the threshold is lowered to the
  lowest error both reach when one of them never gets there).
A result is conclusive when every seed's change has the same sign and their mean is larger than
their standard deviation; otherwise it is reported as inconclusive.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from orchestrator.common.tables import text_table
from orchestrator.config.study import BASELINE, Ablation, StudyConfig
from orchestrator.tracking.metrics import (
    TRAIN_TOP1_ERROR,
    VAL_TOP1_ERROR,
    VAL_TOP5_ERROR,
    ten_crop,
)


@dataclass
class Trial:
    """One finished trial as MLflow holds it: per metric, {epoch: value}."""

    group: str  # BASELINE or an ablation's name
    seed: int  # its seed's index in the study
    history: dict[str, dict[int, float]]
    recorded_seed: int | None = None  # the `seed` its run recorded (None: not known)

    @property
    def epochs(self) -> int:
        """The epochs it trained (its last validation error's)."""
        return max(self.history.get(VAL_TOP1_ERROR, {}), default=0)

    def unlike(self, other: Trial) -> str:
        """'' when the two trained with the same seed for the same epochs, else what differs."""
        seeds = (self.recorded_seed, other.recorded_seed)
        if None not in seeds and seeds[0] != seeds[1]:
            return f"seed {seeds[0]} against {seeds[1]}"
        if self.epochs != other.epochs:
            return f"{self.epochs} against {other.epochs} epochs"
        return ""

    def last(self, metric: str) -> float:
        values = self.history.get(metric, {})
        return values[max(values)] if values else math.nan


def _epochs_to(curve: dict[int, float], threshold: float, start: float) -> float:
    """Fractional epochs until `curve` ({epoch: error}) first reaches `threshold` (linear
    between epochs, from `start` at epoch 0); inf if never."""
    previous_epoch, previous = 0, start
    for epoch in sorted(curve):
        value = curve[epoch]
        if value <= threshold:
            if previous <= threshold:
                return float(previous_epoch)
            return previous_epoch + (previous - threshold) / (previous - value) * (
                epoch - previous_epoch
            )
        previous_epoch, previous = epoch, value
    return math.inf


def change(
    ablation: Ablation, baseline: Trial, variant: Trial | None, classes: int
) -> tuple[float, float]:
    """One seed's measured change: (top-1, top-5) in points, or (times, nan) for `speed`."""
    errors = (VAL_TOP1_ERROR, VAL_TOP5_ERROR)
    if ablation.measure == "ten_crop":
        last = baseline.last
        return tuple(100 * (last(error) - last(ten_crop(error))) for error in errors)
    if ablation.measure == "val_error":
        return tuple(100 * (variant.last(error) - baseline.last(error)) for error in errors)
    if ablation.measure == "overfitting":
        gaps = [t.last(VAL_TOP1_ERROR) - t.last(TRAIN_TOP1_ERROR) for t in (baseline, variant)]
        return 100 * (gaps[1] - gaps[0]), math.nan
    curves = [t.history.get(TRAIN_TOP1_ERROR, {}) for t in (baseline, variant)]
    chance = 1 - 1 / classes
    reached = max(min(c.values(), default=chance) for c in curves)
    threshold = max(ablation.threshold, reached)  # one that both curves reach
    epochs = [_epochs_to(c, threshold, chance) for c in curves]
    return (epochs[1] / epochs[0] if epochs[0] > 0 else math.nan), math.nan


def _summary(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def study_rows(study: StudyConfig, trials: list[Trial], classes: int) -> list[dict]:
    """One row per ablation: published and measured changes, per-seed values, verdicts."""
    by_key = {(t.group, t.seed): t for t in trials}
    rows = []
    for name, ablation in study.ablations.items():
        per_seed, unpaired = [], []
        for seed in range(study.seeds):
            baseline, variant = by_key.get((BASELINE, seed)), by_key.get((name, seed))
            if baseline is None or (variant is None and ablation.measure != "ten_crop"):
                continue
            unlike = variant.unlike(baseline) if variant is not None else ""
            if unlike:  # two trainings that differ in more than the ablation: not compared
                unpaired.append(f"{name} seed {seed} ({unlike})")
                continue
            per_seed.append(change(ablation, baseline, variant, classes))
        top1, top1_spread = _summary([c[0] for c in per_seed])
        top5, top5_spread = _summary([c[1] for c in per_seed])
        expected = 1.0 if ablation.measure == "speed" else 0.0  # no change: 1x, or 0 points
        signs = {math.copysign(1, c[0] - expected) for c in per_seed if c[0] != expected}
        agrees = None
        if ablation.paper_top1 is not None and not math.isnan(top1):
            agrees = (top1 - expected) * (ablation.paper_top1 - expected) > 0
        elif ablation.measure == "overfitting" and not math.isnan(top1):
            agrees = top1 > 0  # the paper: substantial overfitting without dropout
        conclusive = len(per_seed) > 1 and len(signs) == 1 and abs(top1 - expected) > top1_spread
        rows.append(
            {
                "ablation": name,
                "measure": ablation.measure,
                "overrides": ", ".join(f"{k}={v}" for k, v in ablation.overrides.items())
                or "(evaluation only)",
                "paper": ablation.paper,
                "paper_top1": ablation.paper_top1,
                "paper_top5": ablation.paper_top5,
                "top1": top1,
                "top1_spread": top1_spread,
                "top5": top5,
                "top5_spread": top5_spread,
                "seeds": len(per_seed),
                "per_seed_top1": [round(c[0], 4) for c in per_seed],
                "unpaired": unpaired,
                "sign_agrees": agrees,
                "conclusive": conclusive,
            }
        )
    return rows


def _number(value: float | None, spread: float = math.nan, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "-"
    text = f"{value:+.1f}{unit}" if unit != "x" else f"{value:.2f}x"
    return text + (f" ± {spread:.1f}" if not math.isnan(spread) else "")


def table_cells(row: dict) -> list[str]:
    """The printed columns of one row."""
    speed = row["measure"] == "speed"
    unit = "x" if speed else ""
    paper = _number(row["paper_top1"], unit=unit)
    if row["paper_top5"] is not None:
        paper += f" / {_number(row['paper_top5'])}"
    measured = _number(row["top1"], row["top1_spread"], unit)
    if not math.isnan(row["top5"]):
        measured += f" / {_number(row['top5'], row['top5_spread'])}"
    agrees = {True: "yes", False: "no", None: "-"}[row["sign_agrees"]]
    return [
        row["ablation"],
        row["overrides"],
        row["measure"],
        paper or "-",
        measured,
        agrees,
        "yes" if row["conclusive"] else "inconclusive",
        str(row["seeds"]),
    ]


TABLE_HEADER = [
    "ablation",
    "change",
    "measure",
    "paper (top-1 / top-5)",
    "measured (mean ± sd)",
    "sign agrees",
    "conclusive",
    "seeds",
]


def format_text(rows: list[dict]) -> str:
    return text_table([TABLE_HEADER] + [table_cells(row) for row in rows])


def format_markdown(rows: list[dict]) -> str:
    lines = [TABLE_HEADER, ["---"] * len(TABLE_HEADER)] + [table_cells(row) for row in rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"
