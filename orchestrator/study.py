"""`study`: a set of ablations (the `study` section, orchestrator/ablations.py) run as one Ray
Tune experiment, every trial tracked in MLflow, summarised against the published numbers.

The trials are a grid: the baseline and every ablation that trains, each with `study.seeds`
seeds; Tune runs `study.max_concurrent_trials` at a time, every trial its own TorchTrainer (the
sweep's trial, orchestrator/sweep.py), with no early stopping. MLflow holds one parent run
(`study-<name>`, tag kind=study) and one child per trial (tags `group`, `seed_index`). A killed
study continues with `--resume`: finished trials are not run again, unfinished ones resume from
their checkpoints. At the end (and on `report --study`) the parent gets the table (CSV and
Markdown), the validation-error curves of the baseline against each ablation and the paper's
Figure 1 (training error against steps, ReLU against tanh).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import ray.tune as tune

from orchestrator import tracking, tracking_reads
from orchestrator.ablations import BASELINE, StudyConfig, Trial, format_markdown, format_text
from orchestrator.ablations import study_rows as rows_of
from orchestrator.config import ExperimentConfig, load_config_text, to_yaml
from orchestrator.errors import ConfigError
from orchestrator.search import SweepConfig
from orchestrator.sweep import (
    fit,
    make_tuner,
    open_data_for_trials,
    open_parent,
    run_trial,
    trials_storage,
)
from orchestrator.trial_runs import CloseTrialRuns

CURVES = ("val_top1_error", "train_top1_error")  # what the plots draw


def run_study_trial(params: dict, groups: dict, seed: int, study: str, **trial):
    """One trial of the grid: group `params["group"]` (its config overrides in `groups`) with
    seed `seed + params["seed_index"]`."""
    group, index = params["group"], params["seed_index"]
    overrides = {**groups[group], "seed": seed + index}
    run_trial(overrides, tags={"study": study, "group": group, "seed_index": index}, **trial)


def _groups(config: ExperimentConfig) -> dict[str, dict]:
    """Trained group -> its config overrides (the baseline: none)."""
    study = config.study
    return {
        name: dict(study.ablations[name].overrides) if name != BASELINE else {}
        for name in study.trained()
    }


def study(config: ExperimentConfig, resume: bool) -> list[dict]:
    """Run (or with `resume`, continue) the study `config.study` describes; returns its table."""
    spec, groups = config.study, _groups(config)
    if not spec.ablations:
        raise ConfigError("study.ablations: empty; name at least one ablation")
    for name, overrides in groups.items():  # bad fields fail before Ray
        sets = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
        try:
            load_config_text(to_yaml(config, redact_secrets=False), sets)
        except ConfigError as error:
            raise ConfigError(f"study.ablations.{name}.overrides: {error}") from None
    if any(a.measure == "ten_crop" for a in spec.ablations.values()) and not config.train.ten_crop:
        raise ConfigError(
            "train.ten_crop: false; the study's ten_crop ablation reads the "
            "baseline's ten-crop errors: set it true"
        )
    # the trials' run names and their `sweep` tag carry the study's name
    config = dataclasses.replace(config, sweep=SweepConfig(name=spec.name, scheduler="fifo"))
    config, parent = open_parent(config, spec.name, "study", resume)
    config, data = open_data_for_trials(config, "study", spec.max_concurrent_trials)
    parent.log_start(
        params={
            "study.seeds": spec.seeds,
            "study.trials": len(groups) * spec.seeds,
            "train.epochs": config.train.epochs,
            "data.prepared_uri": data.uri,
            "data.num_train_images": data.count("train"),
            "data.num_classes": len(data.classes),
        },
        tags={**tracking.provenance_tags(), "kind": "study", "study": spec.name},
        config_yaml=to_yaml(config),
    )
    parent.log_dataset(data, "train")
    print(
        f"study '{spec.name}': {len(groups)} groups x {spec.seeds} seeds, MLflow "
        f"parent run {parent.run_id} in {tracking.redacted(parent.tracking_uri)}",
        flush=True,
    )
    storage = trials_storage(config)
    trainable = tune.with_parameters(
        run_study_trial,
        groups=groups,
        seed=config.seed,
        study=spec.name,
        base_yaml=to_yaml(config, redact_secrets=False),
        data_uri=data.uri,
        parent_run_id=parent.run_id,
        storage=f"{storage}/{spec.name}/trials",
    )
    space = {
        "group": tune.grid_search(list(groups)),
        "seed_index": tune.grid_search(list(range(spec.seeds))),
    }
    tune_config = tune.TuneConfig(
        metric=config.sweep.metric, mode="min", max_concurrent_trials=spec.max_concurrent_trials
    )
    callback = CloseTrialRuns(parent.run_id, config.sweep, config.train.epochs)
    fit(
        parent,
        make_tuner("study", spec.name, trainable, space, tune_config, storage, resume, callback),
    )
    rows = summarize(parent, spec, config.train.epochs, len(data.classes), data.name)
    parent.finish("FINISHED")
    return rows


def trials_of(client, children: list, metrics=CURVES + ("val_top5_error",)) -> list[Trial]:
    """The finished trials among a study's child runs, with their metric histories."""
    trials = []
    for child in children:
        tags = child.data.tags
        if child.info.status != "FINISHED" or "group" not in tags:
            continue
        history = {
            key: dict(tracking.metric_history(client, child.info.run_id, key)) for key in metrics
        }
        for key in ("val_top1_error_10crop", "val_top5_error_10crop"):
            if key in child.data.metrics:
                history[key] = {max(history["val_top1_error"], default=0): child.data.metrics[key]}
        trials.append(Trial(tags["group"], int(tags["seed_index"]), history))
    return trials


def summarize(
    parent: tracking.TrackedRun, spec: StudyConfig, epochs: int, classes: int, data_name: str
) -> list[dict]:
    """The table on the parent run (CSV, Markdown) and printed, and the plots."""
    trials = trials_of(parent.client, parent.child_runs())
    rows = rows_of(spec, trials, classes)
    title = _title(spec, epochs, data_name, trials)
    print(f"\n{title}\n{format_text(rows)}")
    parent.log_text(title + "\n\n" + format_markdown(rows), "study/table.md")
    parent.log_text(_csv(rows), "study/table.csv")
    with tempfile.TemporaryDirectory() as folder:
        _plots(spec, trials, epochs, Path(folder))
        parent.log_artifacts(folder, "study")
    return rows


def _title(spec: StudyConfig, epochs: int, data_name: str, trials: list[Trial]) -> str:
    note = f" ({spec.dataset_note})" if spec.dataset_note else ""
    return (
        f"study '{spec.name}' on {data_name}{note}, {epochs} epochs per trial, "
        f"{len(trials)} finished trials; change of the ablation against the baseline with "
        "the same seed (points of error; speed: times the epochs)"
    )


def _csv(rows: list[dict]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["ablation"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _mean_curve(trials: list[Trial], group: str, metric: str) -> dict[int, float]:
    curves = [t.history.get(metric, {}) for t in trials if t.group == group]
    epochs = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    return {e: sum(c[e] for c in curves) / len(curves) for e in epochs}


def _plots(spec: StudyConfig, trials: list[Trial], epochs: int, folder: Path) -> None:
    """Validation error per epoch, the baseline against each trained ablation (mean over
    seeds); and training error against epochs for every activation (the paper's Figure 1)."""
    from orchestrator.figures import pyplot

    plt = pyplot()
    trained = [name for name in spec.trained() if name != BASELINE]
    columns = min(3, max(1, len(trained)))
    rows = -(-len(trained) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, trained):
        ax.axis("on")
        for group, style in ((BASELINE, "-"), (name, "--")):
            curve = _mean_curve(trials, group, "val_top1_error")
            ax.plot(list(curve), list(curve.values()), style, marker="o", label=group)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("val top-1 error")
        ax.legend(fontsize=7)
    figure.suptitle(f"study '{spec.name}': validation error, mean over seeds")
    figure.tight_layout()
    figure.savefig(folder / "val_error_curves.png", dpi=100)
    plt.close(figure)
    speed = [name for name in trained if spec.ablations[name].measure == "speed"]
    if speed:
        figure, ax = plt.subplots(figsize=(5, 3.5))
        for group, style in ((BASELINE, "-"), *((name, "--") for name in speed)):
            curve = _mean_curve(trials, group, "train_top1_error")
            ax.plot(list(curve), list(curve.values()), style, marker="o", label=group)
        threshold = spec.ablations[speed[0]].threshold
        ax.axhline(threshold, color="gray", linewidth=0.8)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training top-1 error")
        ax.set_title("training error, baseline against " + ", ".join(speed) + " (Figure 1)")
        ax.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(folder / "figure1_training_error.png", dpi=100)
        plt.close(figure)


def report(config: ExperimentConfig, name: str) -> list[dict]:
    """A study's table from MLflow (what the study printed at its end), and its files."""
    record = tracking_reads.read_experiment(config.tracking, "study", name, "study")
    parent = record.parent
    logged = record.client.download_artifacts(parent.info.run_id, "config.yaml")
    study_config = load_config_text(Path(logged).read_text(), source="the study's config.yaml")
    trials = trials_of(record.client, record.children)
    rows = rows_of(study_config.study, trials, int(parent.data.params["data.num_classes"]))
    data_name = parent.data.params["data.prepared_uri"].rstrip("/").rsplit("/", 1)[-1]
    title = _title(study_config.study, study_config.train.epochs, data_name, trials)
    print(f"{title}\n{format_text(rows)}")
    for path in record.files:
        print(f"file: {path}")
    return rows
