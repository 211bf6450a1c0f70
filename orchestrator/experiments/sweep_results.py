"""A sweep's results as MLflow holds them: one row per trial (best first), the table `report`
prints, and the plots on the sweep's parent run."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from matplotlib.ticker import MaxNLocator

from orchestrator.common.plots import pyplot
from orchestrator.common.tables import text_table
from orchestrator.config.experiment import ExperimentConfig
from orchestrator.config.sweep import SweepConfig
from orchestrator.tracking import tags
from orchestrator.tracking.metrics import EPOCH, VAL_TOP5_ERROR
from orchestrator.tracking.reads import read_experiment
from orchestrator.tracking.records import RunRecord, Store
from orchestrator.tracking.run import TrackedRun


def report(config: ExperimentConfig, sweep_name: str) -> list[dict]:
    """The sweep's trials from MLflow, best first, and where its plots are."""
    record = read_experiment(config.tracking, "sweep", sweep_name, "plots")
    parent = record.parent
    space = json.loads(parent.tags[tags.SEARCH_SPACE])
    spec = SweepConfig(name=sweep_name, space=space)
    rows = trial_rows(record.store, record.children, spec)
    print(
        f"sweep '{sweep_name}' (MLflow run {parent.run_id}, "
        f"{parent.tags.get(tags.SEARCH_ALGORITHM)} search, "
        f"{parent.tags.get(tags.SCHEDULER)} scheduler): {len(rows)} trials"
    )
    print(format_table(rows, spec))
    for plot in record.files:
        print(f"plot: {plot}")
    return rows


def trial_rows(store: Store, children: list[RunRecord], spec: SweepConfig) -> list[dict]:
    """One row per trial run, best first: its swept values, final errors, epochs, status."""
    rows = []
    for child in children:
        rows.append(
            {
                "trial": child.trial_id or child.name,
                **{key: _parse(child.params.get(key)) for key in spec.space},
                spec.metric: child.metrics.get(spec.metric, math.nan),
                VAL_TOP5_ERROR: child.metrics.get(VAL_TOP5_ERROR, math.nan),
                "epochs": store.last_epoch(child.run_id),
                "status": "early-stopped" if child.early_stopped else child.status.lower(),
                "mlflow_run_id": child.run_id,
            }
        )
    return sorted(rows, key=lambda row: (math.isnan(row[spec.metric]), row[spec.metric]))


def _parse(text: str | None):
    try:
        return json.loads(text) if text is not None else None
    except json.JSONDecodeError:
        return text


def format_table(rows: list[dict], spec: SweepConfig) -> str:
    keys = list(spec.space)
    lines = [["trial", *keys, "val top-1 err", "val top-5 err", "epochs", "status"]]
    for row in rows:
        lines.append(
            [str(row["trial"])]
            + [_short(row[key]) for key in keys]
            + [
                f"{row[spec.metric]:.4f}",
                f"{row[VAL_TOP5_ERROR]:.4f}",
                str(row["epochs"]),
                str(row["status"]),
            ]
        )
    return text_table(lines)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def log_plots(parent: TrackedRun, spec: SweepConfig, rows: list[dict]) -> None:
    """PNGs on the parent run: the metric against each swept field; every trial's curve."""
    plt = pyplot()
    with tempfile.TemporaryDirectory() as folder:
        for key, distribution in spec.space.items():
            figure, axes = plt.subplots(figsize=(5, 3.5))
            points = [(row[key], row[spec.metric]) for row in rows if row[key] is not None]
            numeric = all(isinstance(x, (int, float)) for x, _ in points)
            xs = [x if numeric else str(x) for x, _ in points]
            axes.scatter(xs, [y for _, y in points])
            if "loguniform" in distribution:
                axes.set_xscale("log")
            axes.set_xlabel(key)
            axes.set_ylabel(spec.metric)
            axes.set_title(f"{spec.name}: {spec.metric} against {key}")
            figure.tight_layout()
            figure.savefig(Path(folder) / f"{spec.metric}_vs_{key}.png", dpi=100)
            plt.close(figure)
        figure, axes = plt.subplots(figsize=(6, 4))
        for row in rows:
            if row["mlflow_run_id"]:
                curve = sorted(parent.store.history(row["mlflow_run_id"], spec.metric))
                axes.plot(
                    [e for e, _ in curve],
                    [v for _, v in curve],
                    marker="o",
                    label=str(row["trial"]),
                )
        axes.set_xlabel(EPOCH)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(spec.metric)
        axes.set_title(f"{spec.name}: learning curves")
        axes.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(Path(folder) / "learning_curves.png", dpi=100)
        plt.close(figure)
        parent.log_artifacts(folder, "plots")
