"""`study`: a set of ablations (the `study` section, config/study.py) run as one Ray
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
import logging
import tempfile
from pathlib import Path

import ray.tune as tune

from orchestrator.analysis.export import log_trained_model
from orchestrator.analysis.trained import trained_of_run
from orchestrator.common.errors import ConfigError
from orchestrator.common.plots import pyplot
from orchestrator.common.tables import csv_text
from orchestrator.common.yaml_config import to_yaml
from orchestrator.config.experiment import ExperimentConfig, load_config_text
from orchestrator.config.study import BASELINE, StudyConfig
from orchestrator.config.sweep import SweepConfig
from orchestrator.data.prepared import PreparedData, dataset_name
from orchestrator.experiments import tuning
from orchestrator.experiments.ablations import Trial, format_markdown, format_text
from orchestrator.experiments.ablations import study_rows as rows_of
from orchestrator.experiments.trials import CloseTrialRuns, run_trial
from orchestrator.tracking import tags
from orchestrator.tracking.config import redacted
from orchestrator.tracking.metrics import (
    EPOCH,
    TEN_CROP_METRICS,
    TRAIN_TOP1_ERROR,
    VAL_TOP1_ERROR,
    VAL_TOP5_ERROR,
)
from orchestrator.tracking.reads import read_experiment
from orchestrator.tracking.records import RunRecord, Store
from orchestrator.tracking.run import TrackedRun

log = logging.getLogger(__name__)

CURVES = (VAL_TOP1_ERROR, TRAIN_TOP1_ERROR)  # what the plots draw


def run_study_trial(params: dict, groups: dict, seed: int, study: str, **trial):
    """One trial of the grid: group `params["group"]` (its config overrides in `groups`) with
    seed `seed + params["seed_index"]`. (Tune knows a trainable by its function's name.)"""
    group, index = params["group"], params["seed_index"]
    overrides = {**groups[group], "seed": seed + index}
    study_tags = {tags.STUDY: study, tags.GROUP: group, tags.SEED_INDEX: index}
    run_trial(overrides, extra_tags=study_tags, **trial)


def groups_of(config: ExperimentConfig) -> dict[str, dict]:
    """Trained group -> its config overrides (the baseline: none)."""
    study = config.study
    return {
        name: dict(study.ablations[name].overrides) if name != BASELINE else {}
        for name in study.trained()
    }


def study(config: ExperimentConfig, resume: bool) -> list[dict]:
    """Run (or with `resume`, continue) the study `config.study` describes; returns its table."""
    spec, groups = config.study, groups_of(config)
    check(config, groups)
    # the trials' run names and their `sweep` tag carry the study's name
    config = dataclasses.replace(config, sweep=SweepConfig(name=spec.name, scheduler="fifo"))
    with tuning.sole_driver(config, spec.name, "study"):
        return _study(config, groups, resume)


def _study(config: ExperimentConfig, groups: dict[str, dict], resume: bool) -> list[dict]:
    spec = config.study
    config, parent = tuning.open_parent(config, spec.name, "study", resume, run_study_trial)
    with tuning.removed_unless_started(parent, "study", spec.name):
        config, data = tuning.open_data_for_trials(config, "study", spec.max_concurrent_trials)
        fixed = {"study.seeds": spec.seeds, "study.groups": groups}
        fields = tuning.identity_fields(config, data.key, fixed)
        identity = tuning.check_identity(parent, "study", spec.name, fields)
        parent.log_start(
            "study",
            params={
                "study.seeds": spec.seeds,
                "study.trials": len(groups) * spec.seeds,
                "train.epochs": config.train.epochs,
                **data.params(),
            },
            config_yaml=to_yaml(config),
            extra_tags={tags.STUDY: spec.name, **identity},
        )
        parent.log_dataset(data, "train")
        log.info(
            f"study '{spec.name}': {len(groups)} groups x {spec.seeds} seeds, MLflow "
            f"parent run {parent.run_id} in {redacted(parent.tracking_uri)}"
        )
        tuner = _tuner(config, groups, data, parent.run_id, resume)
    tuning.fit(parent, tuner, "study", spec.name, len(groups) * spec.seeds)
    with tuning.closing(parent):
        rows = summarize(parent, config, data.params())
        _log_baseline_model(parent, config)
    parent.finish("FINISHED")
    return rows


def _log_baseline_model(parent: TrackedRun, config: ExperimentConfig) -> None:
    """The baseline's model (its first seed's last checkpoint) on the study's run: the recipe
    every ablation is measured against, servable like any training's."""
    baselines = [c for c in parent.children() if c.group == BASELINE and c.status == "FINISHED"]
    if not baselines:
        return
    first = min(baselines, key=lambda child: child.seed_index or 0)
    trained = trained_of_run(config.tracking, first.run_id)
    title = f"baseline model (seed {first.seed_index or 0}, epoch {trained.epoch})"
    metadata = {"study": config.study.name, "group": BASELINE}
    message = log_trained_model(parent, trained, None, metadata, title)
    if message is not None:
        print(message, flush=True)


def check(config: ExperimentConfig, groups: dict[str, dict]) -> None:
    """Every group's overrides make a valid config, and a ten-crop ablation has its numbers:
    before Ray starts."""
    if not config.study.ablations:
        raise ConfigError("study.ablations: empty; name at least one ablation")
    for name, overrides in groups.items():
        sets = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
        try:
            load_config_text(to_yaml(config, redact_secrets=False), sets)
        except ConfigError as error:
            raise ConfigError(f"study.ablations.{name}.overrides: {error}") from None
    ablations = config.study.ablations.values()
    if any(a.measure == "ten_crop" for a in ablations) and not config.train.ten_crop:
        raise ConfigError(
            "train.ten_crop: false; the study's ten_crop ablation reads the "
            "baseline's ten-crop errors: set it true"
        )


def _tuner(
    config: ExperimentConfig, groups: dict, data: PreparedData, parent_run_id: str, resume: bool
) -> tune.Tuner:
    """The study's grid (groups x seeds) as a Tuner, restored on `resume`."""
    spec = config.study
    where = tuning.folders(config, spec.name)
    trainable = tune.with_parameters(
        run_study_trial,
        groups=groups,
        seed=config.seed,
        study=spec.name,
        base_yaml=to_yaml(config, redact_secrets=False),
        data_uri=data.uri,
        parent_run_id=parent_run_id,
        storage=where.trials,
    )
    space = {
        "group": tune.grid_search(list(groups)),
        "seed_index": tune.grid_search(list(range(spec.seeds))),
    }
    # no metric: a study compares each ablation with its baseline, never trials with each
    # other (Tune would print a "current best trial" every 30 s)
    tune_config = tune.TuneConfig(max_concurrent_trials=spec.max_concurrent_trials)
    callback = CloseTrialRuns(parent_run_id, config.train.epochs, stops_early=False)
    return tuning.make_tuner("study", where, trainable, space, tune_config, resume, callback)


def trials_of(
    store: Store, children: list[RunRecord], metrics=CURVES + (VAL_TOP5_ERROR,)
) -> tuple[list[Trial], list[str]]:
    """The finished trials among a study's child runs, with their metric histories; and the
    (group, seed) the runs hold twice (a grid started again under one parent), whose runs are
    left out: which of them the table should show, nobody can tell."""
    finished = [c for c in children if c.status == "FINISHED" and c.group is not None]
    keys = [(child.group, child.seed_index) for child in finished]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    trials = []
    for child in finished:
        if (child.group, child.seed_index) in twice:
            continue
        history = {key: dict(store.history(child.run_id, key)) for key in metrics}
        last = max(history[VAL_TOP1_ERROR], default=0)
        for key in TEN_CROP_METRICS:
            if key in child.metrics:
                history[key] = {last: child.metrics[key]}
        seed = child.params.get("seed")
        trials.append(Trial(child.group, child.seed_index, history, _int(seed)))
    return trials, [f"{group} seed {seed}" for group, seed in twice]


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


def summarize(parent: TrackedRun, config: ExperimentConfig, data: dict) -> list[dict]:
    """The table on the parent run (CSV, Markdown) and printed, and the plots. `data`: the
    data's facts as the parent's params hold them (`PreparedData.params`)."""
    spec = config.study
    trials, twice = trials_of(parent.store, parent.children())
    rows = rows_of(spec, trials, int(data["data.num_classes"]))
    title, notes = _title(config, data, trials), _notes(spec, trials, rows, twice)
    print(f"\n{title}\n{format_text(rows)}{notes}")
    parent.log_text(title + "\n\n" + format_markdown(rows) + notes, "study/table.md")
    parent.log_text(csv_text(rows, columns_when_empty=("ablation",)), "study/table.csv")
    with tempfile.TemporaryDirectory() as folder:
        _plots(spec, trials, Path(folder))
        parent.log_artifacts(folder, "study")
    return rows


def _notes(spec: StudyConfig, trials: list[Trial], rows: list[dict], twice: list[str]) -> str:
    """Lines under the table, each naming what a row leaves out ('' when nothing is): trials
    of the grid that did not finish, seeds whose baseline and variant trained differently,
    (group, seed) trained twice."""
    done = {(trial.group, trial.seed) for trial in trials}
    missing = [
        f"{group} seed {seed}"
        for group in spec.trained()
        for seed in range(spec.seeds)
        if (group, seed) not in done and f"{group} seed {seed}" not in twice
    ]
    unpaired = [entry for row in rows for entry in row.get("unpaired", [])]
    lines = [
        ("no finished trial for", missing),
        ("not compared, trained with another seed or for other epochs", unpaired),
        ("left out, trained twice under this study", twice),
    ]
    return "".join(f"\n{what}: {', '.join(items)}" for what, items in lines if items)


def _title(config: ExperimentConfig, data: dict, trials: list[Trial]) -> str:
    """What the table compares, with the data's measured facts (`data`: the data params a
    study's parent run holds; runs from before some of them were logged have fewer)."""
    spec = config.study
    facts = [f"{data['data.num_classes']} classes", f"{data['data.num_train_images']} training"]
    if "data.num_val_images" in data:
        facts.append(f"{data['data.num_val_images']} validation images")
    else:
        facts[-1] += " images"
    if "data.image_size" in data:
        facts.append(f"{data['data.image_size']} px")
    facts.append(f"{config.model.input_size} px crops")
    note = f"; {spec.dataset_note}" if spec.dataset_note else ""
    return (
        f"study '{spec.name}' on {dataset_name(str(data['data.prepared_uri']))} "
        f"({', '.join(facts)}{note}), {config.train.epochs} epochs per trial, {len(trials)} "
        "finished trials; change of the ablation against the baseline with the same seed "
        "(points of error; speed: times the epochs)"
    )


def _mean_curve(trials: list[Trial], group: str, metric: str) -> dict[int, float]:
    curves = [t.history.get(metric, {}) for t in trials if t.group == group]
    epochs = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    return {e: sum(c[e] for c in curves) / len(curves) for e in epochs}


def _plots(spec: StudyConfig, trials: list[Trial], folder: Path) -> None:
    """Validation error per epoch, the baseline against each trained ablation (mean over
    seeds); and training error against epochs for every activation (the paper's Figure 1)."""
    plt = pyplot()
    trained = [name for name in spec.trained() if name != BASELINE]
    if trained:  # (ten_crop ablations train nothing of their own)
        _draw_val_error(plt, spec, trials, trained, folder / "val_error_curves.png")
    speed = [name for name in trained if spec.ablations[name].measure == "speed"]
    if speed:
        threshold = spec.ablations[speed[0]].threshold
        _draw_figure1(plt, trials, speed, threshold, folder / "figure1_training_error.png")


def _draw_val_error(plt, spec: StudyConfig, trials: list[Trial], trained: list[str], path):
    columns = min(3, max(1, len(trained)))
    rows = -(-len(trained) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, trained):
        ax.axis("on")
        for group, style in ((BASELINE, "-"), (name, "--")):
            curve = _mean_curve(trials, group, VAL_TOP1_ERROR)
            ax.plot(list(curve), list(curve.values()), style, marker="o", label=group)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(EPOCH)
        ax.set_ylabel("val top-1 error")
        ax.legend(fontsize=7)
    figure.suptitle(f"study '{spec.name}': validation error, mean over seeds")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _draw_figure1(plt, trials: list[Trial], speed: list[str], threshold: float, path):
    figure, ax = plt.subplots(figsize=(5, 3.5))
    for group, style in ((BASELINE, "-"), *((name, "--") for name in speed)):
        curve = _mean_curve(trials, group, TRAIN_TOP1_ERROR)
        ax.plot(list(curve), list(curve.values()), style, marker="o", label=group)
    ax.axhline(threshold, color="gray", linewidth=0.8)
    ax.set_xlabel(EPOCH)
    ax.set_ylabel("training top-1 error")
    ax.set_title("training error, baseline against " + ", ".join(speed) + " (Figure 1)")
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def report(config: ExperimentConfig, name: str) -> list[dict]:
    """A study's table from MLflow (what the study printed at its end), and its files."""
    record = read_experiment(config.tracking, "study", name, "study")
    parent = record.parent
    logged = record.store.read_text(parent.run_id, "config.yaml")
    study_config = load_config_text(logged, source="the study's config.yaml")
    trials, twice = trials_of(record.store, record.children)
    rows = rows_of(study_config.study, trials, int(parent.params["data.num_classes"]))
    title = _title(study_config, parent.params, trials)
    print(f"{title}\n{format_text(rows)}{_notes(study_config.study, trials, rows, twice)}")
    for path in record.files:
        print(f"file: {path}")
    return rows
