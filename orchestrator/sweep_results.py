"""A sweep's results as MLflow holds them: one row per trial (best first), the table `report`
prints, and the plots on the sweep's parent run."""

from __future__ import annotations

import json
import math
from pathlib import Path

from orchestrator import tracking, tracking_reads
from orchestrator.config import ExperimentConfig
from orchestrator.search import SweepConfig


def report(config: ExperimentConfig, sweep_name: str) -> list[dict]:
    """The sweep's trials from MLflow, best first, and where its plots are."""
    record = tracking_reads.read_experiment(config.tracking, "sweep", sweep_name, "plots")
    parent = record.parent
    space = json.loads(parent.data.tags["search_space"])
    spec = SweepConfig(name=sweep_name, space=space)
    rows = trial_rows(record.client, record.children, spec)
    print(
        f"sweep '{sweep_name}' (MLflow run {parent.info.run_id}, "
        f"{parent.data.tags.get('search_algorithm')} search, "
        f"{parent.data.tags.get('scheduler')} scheduler): {len(rows)} trials"
    )
    print(format_table(rows, spec))
    for plot in record.files:
        print(f"plot: {plot}")
    return rows


def trial_rows(client, children: list, spec: SweepConfig) -> list[dict]:
    """One row per trial run, best first: its swept values, final errors, epochs, status."""
    rows = []
    for child in children:
        params, metrics, tags = child.data.params, child.data.metrics, child.data.tags
        history = tracking.metric_history(client, child.info.run_id, spec.metric)
        rows.append(
            {
                "trial": tags.get("trial_id", child.info.run_name),
                **{key: _parse(params.get(key)) for key in spec.space},
                spec.metric: metrics.get(spec.metric, math.nan),
                "val_top5_error": metrics.get("val_top5_error", math.nan),
                "epochs": max((step for step, _ in history), default=0),
                "status": "early-stopped"
                if tags.get("early_stopped") == "true"
                else child.info.status.lower(),
                "mlflow_run_id": child.info.run_id,
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
    header = ["trial", *keys, "val top-1 err", "val top-5 err", "epochs", "status"]
    lines = [header]
    for row in rows:
        lines.append(
            [str(row["trial"])]
            + [_short(row[key]) for key in keys]
            + [
                f"{row[spec.metric]:.4f}",
                f"{row['val_top5_error']:.4f}",
                str(row["epochs"]),
                str(row["status"]),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in lines)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def log_plots(parent: tracking.TrackedRun, spec: SweepConfig, rows: list[dict]) -> None:
    """PNGs on the parent run: the metric against each swept field; every trial's curve."""
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

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
                curve = sorted(
                    tracking.metric_history(parent.client, row["mlflow_run_id"], spec.metric)
                )
                axes.plot(
                    [e for e, _ in curve],
                    [v for _, v in curve],
                    marker="o",
                    label=str(row["trial"]),
                )
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(spec.metric)
        axes.set_title(f"{spec.name}: learning curves")
        axes.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(Path(folder) / "learning_curves.png", dpi=100)
        plt.close(figure)
        parent.log_artifacts(folder, "plots")
