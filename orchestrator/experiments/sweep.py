"""Ray Tune sweeps over any config fields, every trial tracked in MLflow exactly once.

A trial is a Tune function that builds and fits its own `TorchTrainer` (the Ray Train V2 way of
composing Tune and Train: experiments/trials.py); `TuneReportCallback` forwards rank 0's epoch
reports to Tune, which the ASHA scheduler reads. MLflow holds one parent run per sweep and one
child run per trial, nested under it (MLflow's parent-run tag). A child run is identified by its
trial id (its run-key tag `<sweep>-<trial id>`), so a resumed sweep finds the run each
unfinished trial already had instead of making a second one; finished trials are not run again
(`Tuner.restore`). At the end the parent gets the best trial, a CSV, the plots, the best model
(registered) and its figures.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import ray.tune as tune

from orchestrator.analysis.export import Registration, log_trained_model
from orchestrator.analysis.figures import log_figures
from orchestrator.analysis.trained import trained_of_run
from orchestrator.common.errors import ConfigError
from orchestrator.common.tables import csv_text
from orchestrator.common.yaml_config import to_yaml
from orchestrator.config.experiment import ExperimentConfig, load_config_text
from orchestrator.data.prepared import PreparedData
from orchestrator.experiments import tuning
from orchestrator.experiments.search import (
    param_space,
    sample_overrides,
    scheduler,
    search_algorithm,
    trial_count,
)
from orchestrator.experiments.sweep_results import format_table, log_plots, trial_rows
from orchestrator.experiments.trials import CloseTrialRuns, close_trial_run, run_trial
from orchestrator.tracking import tags
from orchestrator.tracking.config import redacted, ui_command
from orchestrator.tracking.metrics import VAL_TOP5_ERROR
from orchestrator.tracking.run import TrackedRun

log = logging.getLogger(__name__)

# The sweep's fields a --resume must keep (with its base training): what it searches and how
IDENTITY = (
    "space",
    "search",
    "scheduler",
    "metric",
    "num_samples",
    "grace_period",
    "reduction_factor",
)


def sweep(config: ExperimentConfig, resume: bool) -> None:
    """Run (or with `resume`, continue) the sweep `config.sweep` describes, then summarize it
    on its MLflow parent run."""
    spec = config.sweep
    check(config)
    with tuning.sole_driver(config, spec.name, "sweep"):
        _sweep(config, resume)


def check(config: ExperimentConfig) -> None:
    """The space names fields that exist, with values they take: before Ray starts."""
    if not config.sweep.space:
        raise ConfigError("sweep.space: empty; name at least one config field to sweep")
    load_config_text(to_yaml(config, redact_secrets=False), sample_overrides(config.sweep.space))


def _sweep(config: ExperimentConfig, resume: bool) -> None:
    spec = config.sweep
    config, parent = tuning.open_parent(config, spec.name, "sweep", resume, run_trial)
    with tuning.removed_unless_started(parent, "sweep", spec.name):
        if spec.scheduler != "fifo":
            tuning.require_state_api()
        config, data = tuning.open_data_for_trials(config, "sweep", spec.max_concurrent_trials)
        fixed = {f"sweep.{key}": getattr(spec, key) for key in IDENTITY}
        fields = tuning.identity_fields(config, data.key, fixed, varied=tuple(spec.space))
        _log_start(parent, config, tuning.check_identity(parent, "sweep", spec.name, fields))
        tuner = _tuner(config, data, parent.run_id, resume)
    results = tuning.fit(parent, tuner, "sweep", spec.name, trial_count(spec))
    with tuning.closing(parent):
        summarize(parent, config, results)


def _log_start(parent: TrackedRun, config: ExperimentConfig, identity: dict) -> None:
    spec = config.sweep
    parent.log_start(
        "sweep",
        params={"sweep." + k: v for k, v in dataclasses.asdict(spec).items() if k != "space"},
        config_yaml=to_yaml(config),
        extra_tags={
            tags.SWEEP: spec.name,
            tags.SEARCH_SPACE: json.dumps(spec.space),
            tags.SEARCH_ALGORITHM: spec.search,
            tags.SCHEDULER: spec.scheduler,
            **identity,
        },
    )
    where = redacted(parent.tracking_uri)
    log.info(f"sweep '{spec.name}': MLflow parent run {parent.run_id} in {where}")


def _tuner(
    config: ExperimentConfig, data: PreparedData, parent_run_id: str, resume: bool
) -> tune.Tuner:
    """The Tuner of the sweep in `<train.storage_path>/sweeps/<sweep.name>`: restored from there
    on `resume`."""
    spec = config.sweep
    where = tuning.folders(config, spec.name)
    trainable = tune.with_parameters(
        run_trial,
        base_yaml=to_yaml(config, redact_secrets=False),
        data_uri=data.uri,
        parent_run_id=parent_run_id,
        storage=where.trials,
    )
    tune_config = tune.TuneConfig(
        metric=spec.metric,
        mode="min",
        search_alg=search_algorithm(spec),
        scheduler=scheduler(spec, config.train.epochs),
        num_samples=spec.num_samples,
        max_concurrent_trials=spec.max_concurrent_trials,
    )
    callback = CloseTrialRuns(parent_run_id, config.train.epochs, spec.scheduler != "fifo")
    space = param_space(spec.space, spec.search)
    return tuning.make_tuner("sweep", where, trainable, space, tune_config, resume, callback)


def summarize(parent: TrackedRun, config: ExperimentConfig, results) -> None:
    """Honest statuses on the children; on the parent: the best trial, a CSV, the plots."""
    spec, epochs = config.sweep, config.train.epochs
    children = {run.trial_id: run for run in parent.children()}
    for result in results:
        metrics = result.metrics or {}
        child = children.get(metrics.get("trial_id") or _trial_id_from_path(result.path))
        if child is not None:
            failed, stops_early = result.error is not None, spec.scheduler != "fifo"
            close_trial_run(parent, child.run_id, epochs, failed, stops_early)
    rows = trial_rows(parent.store, parent.children(), spec)  # as `report` shows them
    if rows and not math.isnan(rows[0][spec.metric]):
        best = rows[0]
        parent.log_metrics(
            {
                f"best_{spec.metric}": best[spec.metric],
                f"best_{VAL_TOP5_ERROR}": best[VAL_TOP5_ERROR],
            }
        )
        parent.set_tags(
            {
                tags.BEST_TRIAL: best["trial"],
                tags.BEST_RUN_ID: best["mlflow_run_id"],
                tags.BEST_CONFIG: json.dumps({k: best[k] for k in spec.space}),
            }
        )
        _log_best_model(parent, config, best)
    parent.log_text(csv_text(rows, columns_when_empty=("trial",)), "trials.csv")
    log_plots(parent, spec, rows)
    parent.finish("FINISHED")
    print(format_table(rows, spec))
    where = redacted(parent.tracking_uri)
    print(f"MLflow: sweep run {parent.run_id} (trials nested under it) in {where}")
    print(f"Open the MLflow UI:  {ui_command(parent.tracking_uri)}")


def _log_best_model(parent: TrackedRun, config: ExperimentConfig, best: dict) -> None:
    """The best trial's last checkpoint as the parent run's MLflow model (its predictor:
    analysis/export.py), registered under `sweep.register_model` unless None."""
    spec = config.sweep
    trained = trained_of_run(config.tracking, best["mlflow_run_id"])
    registration = None
    if spec.register_model is not None:
        registration = Registration(
            spec.register_model,
            spec.register_alias,
            spec.metric,
            best[spec.metric],
            {tags.SWEEP: spec.name, tags.TRIAL: best["trial"]},
        )
    metadata = {"sweep": spec.name, "trial": best["trial"], spec.metric: best[spec.metric]}
    title = f"best model (trial {best['trial']}, epoch {trained.epoch})"
    message = log_trained_model(parent, trained, registration, metadata, title)
    if message is not None:
        parent.set_tags({tags.BEST_MODEL: message})
        print(message, flush=True)
    if config.tracking.figures:  # the best trial's, on the sweep's run
        log_figures(parent, trained)


def _trial_id_from_path(path: str | None) -> str | None:
    # Tune's trial folders are named <trainable>_<trial id>_<index>_<params>...
    name = Path(path or "").name
    parts = name.split("_")
    return parts[2] if len(parts) > 2 else None
