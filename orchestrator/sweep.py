"""Ray Tune sweeps over any config fields, every trial tracked in MLflow exactly once.

A trial is a Tune function that builds and fits its own `TorchTrainer` (the Ray Train V2 way of
composing Tune and Train); `TuneReportCallback` forwards rank 0's epoch reports to Tune, which
the ASHA scheduler reads. MLflow holds one parent run per sweep and one child run per trial,
nested under it (MLflow's parent-run tag). A child run is identified by its trial id (its run-key
tag `<sweep>-<trial id>`), so a resumed sweep finds the run each unfinished trial already had
instead of making a second one; finished trials are not run again (`Tuner.restore`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from pathlib import Path

import ray
import ray.tune as tune
from ray.tune.integration.ray_train import TuneReportCallback

from orchestrator import cluster, figures, identity, launch, tracking, tracking_reads
from orchestrator import data as data_pipeline
from orchestrator.checkpoints import read_checkpoint
from orchestrator.config import ExperimentConfig, load_config_text, to_yaml
from orchestrator.errors import ConfigError
from orchestrator.redact import redact_text
from orchestrator.search import (
    param_space,
    sample_overrides,
    scheduler,
    search_algorithm,
)
from orchestrator.storage import absolute, for_ray
from orchestrator.sweep_results import format_table, log_plots, trial_rows
from orchestrator.trial_runs import CloseTrialRuns, close_trial_run

# A trial's own process only waits on its TorchTrainer, whose workers hold the real CPUs.
TRIAL_DRIVER_CPUS = 0.01


def run_trial(
    params: dict,
    base_yaml: str,
    data_uri: str,
    parent_run_id: str,
    storage: str,
    tags: dict | None = None,
):
    """One trial: the base config with `params` (config field -> value), trained by its own
    TorchTrainer, in an MLflow run nested under the parent and tagged with `tags` too."""
    trial_id = tune.get_context().get_trial_id()
    overrides = [f"{key}={json.dumps(value)}" for key, value in params.items()]
    config = load_config_text(base_yaml, overrides)
    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, source="prepared", root=data_uri)
    )
    run_name = f"{config.sweep.name}-{trial_id}"
    run = tracking.TrackedRun(config.tracking, run_name, resume=True, parent_run_id=parent_run_id)
    done = len(run.metric_history(config.sweep.metric))
    if run.previous_status == "FINISHED" or done >= config.train.epochs:
        # Ended (all its epochs, or stopped by the scheduler: `CloseTrialRuns`) before the
        # sweep's driver stopped, after Tune last saved its state: report the run's final
        # metrics instead of training it again.
        print(f"trial {trial_id} already finished (MLflow run {run.run_id})", flush=True)
        run.abandon()  # its status as it was
        tune.report({**run.final_metrics(), "epoch": done})
        return
    cluster.quiet_progress_bars()
    job = launch.plan_training(config, data_pipeline.open_prepared(data_uri), run_name)
    job = launch.with_storage(job, storage)
    identity.check_resume(job.plan, run_name, run)
    run.log_start(
        params=job.params,
        tags={
            **tracking.provenance_tags(),
            **cluster.cluster_shape(),
            **job.identity_tags,
            "kind": "trial",
            "trial_id": trial_id,
            "sweep": config.sweep.name,
            **(tags or {}),
        },
        config_yaml=to_yaml(job.config),
    )
    # No figures here: Tune ends a trial at its last report; the sweep draws its best trial's
    launch.run_training(
        job,
        run,
        storage_path=storage,
        callbacks=(TuneReportCallback(),),
        close_on_error=False,
        figures=False,
    )


def sweep(config: ExperimentConfig, resume: bool) -> None:
    """Run (or with `resume`, continue) the sweep `config.sweep` describes, then summarize it
    on its MLflow parent run."""
    spec = config.sweep
    if not spec.space:
        raise ConfigError("sweep.space: empty; name at least one config field to sweep")
    # bad keys fail before Ray
    load_config_text(to_yaml(config, redact_secrets=False), sample_overrides(spec.space))
    config, parent = open_parent(config, spec.name, "sweep", resume)
    if spec.scheduler != "fifo":
        _require_state_api()
    config, data = open_data_for_trials(config, "sweep", spec.max_concurrent_trials)
    _log_start(parent, config)
    storage = trials_storage(config)
    results = fit(parent, _tuner(config, data.uri, parent.run_id, storage, resume))
    summarize(parent, config, results)


def trials_storage(config: ExperimentConfig) -> str:
    """Where Tune keeps its experiments' state: `<train.storage_path>/sweeps` (a path or URI)."""
    return f"{absolute(config.train.storage_path)}/sweeps"


def open_parent(
    config: ExperimentConfig, name: str, kind: str, resume: bool
) -> tuple[ExperimentConfig, tracking.TrackedRun]:
    """The Tune experiment `name`'s MLflow parent run (`<kind>-<name>`), new or (`resume`) the
    interrupted one's; and the config with an absolute tracking URI, as trials need it (they
    run in other processes and directories). Starts Ray."""
    config = dataclasses.replace(
        config,
        tracking=dataclasses.replace(
            config.tracking, uri=tracking.resolve_tracking_uri(config.tracking)
        ),
    )
    path = f"{trials_storage(config)}/{name}"
    if not resume and _can_restore(path):
        raise ConfigError(
            f"{kind}.name: '{name}' already ran in {redact_text(path)}; pass --resume to "
            f"continue it, or choose another {kind}.name"
        )
    parent = tracking.TrackedRun(
        config.tracking, f"{kind}-{name}", resume=resume, refuse_existing=not resume
    )
    if not parent.tracked:
        raise ConfigError(
            f"tracking.optional: a {kind} cannot run untracked (its trials are found again on "
            "--resume through their MLflow runs); start the tracking server first"
        )
    cluster.ensure_ray()
    cluster.keep_credentials_out_of_ray_logs()
    return config, parent


def open_data_for_trials(config: ExperimentConfig, kind: str, concurrent: int):
    """(config with each trial's CPU share for Ray Data, the prepared data). `concurrent`:
    the `<kind>.max_concurrent_trials`."""
    data = data_pipeline.open_data(config.data, config.prepare)
    return _share_cpus(config, kind, concurrent), data


def fit(parent: tracking.TrackedRun, tuner: tune.Tuner):
    """Run the Tune experiment; its trials' MLflow runs are closed as Tune ends them."""
    CloseTrialRuns.open_sweeps[parent.run_id] = parent
    try:
        return tuner.fit()
    except BaseException:
        parent.finish("FAILED")
        raise
    finally:
        CloseTrialRuns.open_sweeps.pop(parent.run_id)


def _log_start(parent: tracking.TrackedRun, config: ExperimentConfig) -> None:
    spec = config.sweep
    parent.log_start(
        params={"sweep." + k: v for k, v in dataclasses.asdict(spec).items() if k != "space"},
        tags={
            **tracking.provenance_tags(),
            **cluster.cluster_shape(),
            "kind": "sweep",
            "sweep": spec.name,
            "search_space": json.dumps(spec.space),
            "search_algorithm": spec.search,
            "scheduler": spec.scheduler,
        },
        config_yaml=to_yaml(config),
    )
    where = tracking.redacted(parent.tracking_uri)
    print(f"sweep '{spec.name}': MLflow parent run {parent.run_id} in {where}", flush=True)


def _tuner(
    config: ExperimentConfig, data_uri: str, parent_run_id: str, storage: str, resume: bool
) -> tune.Tuner:
    """The Tuner of the sweep in `<storage>/<sweep.name>`: restored from there on `resume`."""
    spec = config.sweep
    trainable = tune.with_parameters(
        run_trial,
        base_yaml=to_yaml(config, redact_secrets=False),
        data_uri=data_uri,
        parent_run_id=parent_run_id,
        storage=f"{storage}/{spec.name}/trials",
    )
    tune_config = tune.TuneConfig(
        metric=spec.metric,
        mode="min",
        search_alg=search_algorithm(spec),
        scheduler=scheduler(spec, config.train.epochs),
        num_samples=spec.num_samples,
        max_concurrent_trials=spec.max_concurrent_trials,
    )
    callback = CloseTrialRuns(parent_run_id, spec, config.train.epochs)
    return make_tuner(
        "sweep",
        spec.name,
        trainable,
        param_space(spec.space, spec.search),
        tune_config,
        storage,
        resume,
        callback,
    )


def make_tuner(
    kind: str,
    name: str,
    trainable,
    space: dict,
    tune_config: tune.TuneConfig,
    storage: str,
    resume: bool,
    callback: CloseTrialRuns,
) -> tune.Tuner:
    """The Tuner of the `kind` (sweep, study) `name` in `<storage>/<name>`: restored from there
    on `resume` (finished trials are not run again), else new."""
    path = f"{storage}/{name}"
    trainable = tune.with_resources(trainable, {"cpu": TRIAL_DRIVER_CPUS})
    if resume and _can_restore(path):
        print(f"resuming {kind} '{name}' from {redact_text(path)}", flush=True)
        in_storage, filesystem = for_ray(path)
        return tune.Tuner.restore(
            in_storage, trainable=trainable, resume_unfinished=True, storage_filesystem=filesystem
        )
    in_storage, filesystem = for_ray(storage)
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune_config,
        run_config=tune.RunConfig(
            name=name, storage_path=in_storage, storage_filesystem=filesystem, callbacks=[callback]
        ),
    )


def _can_restore(path: str) -> bool:
    in_storage, filesystem = for_ray(path)
    return tune.Tuner.can_restore(in_storage, storage_filesystem=filesystem)


def _share_cpus(config: ExperimentConfig, kind: str, concurrent: int) -> ExperimentConfig:
    """Give each of the concurrent trials its share of the cluster's CPUs for Ray Data.

    Left alone, the first trial's data streams take every CPU its trainer leaves free, and the
    next trial's workers wait for CPUs that never come (their start times out).
    """
    train, data = config.train, config.data
    cpus = ray.cluster_resources().get("CPU", 0)
    per_trial = train.num_workers * train.cpus_per_worker + TRIAL_DRIVER_CPUS
    share = data.max_cpus
    if share is None:
        share = (cpus - concurrent * per_trial) / concurrent
    if share < data.decode_cpus:
        raise ConfigError(
            f"{kind}.max_concurrent_trials: {concurrent} trials x "
            f"{train.num_workers} workers x {train.cpus_per_worker:g} CPUs leave "
            f"{max(share, 0):g} CPUs per trial for Ray Data on this {cpus:g}-CPU cluster, less "
            f"than data.decode_cpus ({data.decode_cpus:g}); run fewer trials at once"
        )
    return dataclasses.replace(config, data=dataclasses.replace(data, max_cpus=share))


def _require_state_api() -> None:
    """Trials that the scheduler stops must give their CPUs back, which needs Ray's State API.

    Tune stops a trial by killing its process; Ray Train then frees the trial's worker CPUs
    once its placement-group cleaner sees (through the State API, served by Ray's dashboard)
    that the trial's controller is gone. Without it the next trials wait for CPUs forever.
    """
    from ray.util.state import list_actors
    from ray.util.state.exception import RayStateApiException

    deadline = time.monotonic() + 30  # a local Ray's dashboard takes seconds to come up
    while True:
        try:
            list_actors(limit=1, timeout=10)
            return
        except (RayStateApiException, ConnectionError) as error:
            if time.monotonic() < deadline:
                time.sleep(1)
                continue
            failure = error
            break
    raise ConfigError(
        "sweep.scheduler: an early-stopping scheduler needs Ray's State API, which this "
        f"cluster does not serve ({type(failure).__name__}); start Ray with its dashboard "
        "(`ray start --head` includes it unless --include-dashboard=false), or use "
        "sweep.scheduler: fifo"
    ) from failure


def summarize(parent: tracking.TrackedRun, config: ExperimentConfig, results) -> None:
    """Honest statuses on the children; on the parent: the best trial, a CSV, the plots."""
    spec, epochs = config.sweep, config.train.epochs
    children = {run.data.tags.get("trial_id"): run for run in parent.child_runs()}
    for result in results:
        metrics = result.metrics or {}
        child = children.get(metrics.get("trial_id") or _trial_id_from_path(result.path))
        if child is not None:
            close_trial_run(parent, child.info.run_id, spec, epochs, result.error is not None)
    rows = trial_rows(parent.client, parent.child_runs(), spec)  # as `report` shows them
    if rows and not math.isnan(rows[0][spec.metric]):
        best = rows[0]
        parent.log_metrics(
            {
                f"best_{spec.metric}": best[spec.metric],
                "best_val_top5_error": best["val_top5_error"],
            }
        )
        parent.set_tags(
            {
                "best_trial": best["trial"],
                "best_run_id": best["mlflow_run_id"],
                "best_config": json.dumps({k: best[k] for k in spec.space}),
            }
        )
        _log_best_model(parent, config, best)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["trial"])
    writer.writeheader()
    writer.writerows(rows)
    parent.log_text(buffer.getvalue(), "trials.csv")
    log_plots(parent, spec, rows)
    parent.finish("FINISHED")
    print(format_table(rows, spec))
    where = tracking.redacted(parent.tracking_uri)
    print(f"MLflow: sweep run {parent.run_id} (trials nested under it) in {where}")
    print(f"Open the MLflow UI:  {tracking.ui_command(parent.tracking_uri)}")


def _log_best_model(parent: tracking.TrackedRun, config: ExperimentConfig, best: dict) -> None:
    """The best trial's last checkpoint as an MLflow model on the parent run, registered: a
    `Classifier`, uint8 images at the prepared size in, logits out."""
    import numpy as np
    import torch

    from workloads.alexnet.export import Classifier
    from workloads.alexnet.model import build_model

    spec = config.sweep
    checkpoint = tracking_reads.checkpoint_of_run(config.tracking, f"runs:/{best['mlflow_run_id']}")
    state = read_checkpoint(checkpoint)
    trial_config = load_config_text(state["config"], source=f"{checkpoint} (its config)")
    data = data_pipeline.open_prepared(trial_config.data.root)
    model = build_model(trial_config.model)
    model.load_state_dict(state["model"])
    mean = data.stats.mean_image if trial_config.data.mean_subtraction else None
    classifier = Classifier(model, trial_config.model.input_size, mean).eval()
    example = np.repeat(np.round(data.stats.mean_image * 255).astype(np.uint8)[None], 2, axis=0)
    with torch.no_grad():
        output = classifier(torch.from_numpy(example)).numpy()
    metadata = {
        "prepared_size": data.image_size,
        "classes": data.classes,
        "sweep": spec.name,
        "trial": best["trial"],
    }
    info = parent.log_model(classifier, example, output, spec.register_model, metadata)
    message = f"best model (trial {best['trial']}, epoch {state['epoch']}): {info.model_uri}"
    if spec.register_model is not None:
        version = info.registered_model_version
        tags = {
            "sweep": spec.name,
            "trial": best["trial"],
            "checkpoint": checkpoint,
            spec.metric: best[spec.metric],
        }
        parent.set_alias(spec.register_model, spec.register_alias, version, tags)
        message += f", registered as models:/{spec.register_model}@{spec.register_alias} "
        message += f"(version {version})"
    parent.set_tags({"best_model": message})
    print(message, flush=True)
    if config.tracking.figures:  # the best trial's, on the sweep's run
        figures.log_figures(parent, state, data)


def _trial_id_from_path(path: str | None) -> str | None:
    # Tune's trial folders are named <trainable>_<trial id>_<index>_<params>...
    name = Path(path or "").name
    parts = name.split("_")
    return parts[2] if len(parts) > 2 else None
