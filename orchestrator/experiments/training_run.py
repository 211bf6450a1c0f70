"""One training run, tracked: prepared shards -> Ray Data -> Ray Train workers -> one MLflow
run, which ends FINISHED (with the paper's figures), FAILED or KILLED. The `train` and `demo`
commands run one (`train`); a sweep or study runs one per trial (experiments/trials.py)."""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time

import ray.train

from orchestrator.analysis.export import Registration, log_trained_model
from orchestrator.analysis.figures import log_figures
from orchestrator.analysis.trained import Trained
from orchestrator.common import logs
from orchestrator.common.errors import Interrupted
from orchestrator.common.locks import sole_driver
from orchestrator.common.redact import redact_text
from orchestrator.common.yaml_config import to_yaml
from orchestrator.config.experiment import ExperimentConfig, training_params
from orchestrator.data.sources import open_data
from orchestrator.tracking import tags
from orchestrator.tracking.callback import epoch_logger
from orchestrator.tracking.config import redacted, ui_command
from orchestrator.tracking.metrics import (
    SUMMARY_COLUMNS,
    VAL_TOP1_ERROR,
    VAL_TOP5_ERROR,
    EpochMetrics,
)
from orchestrator.tracking.run import TrackedRun, ended_status
from orchestrator.training import identity
from orchestrator.training.checkpoints import newest_checkpoint, read_checkpoint, stored_checkpoints
from orchestrator.training.config import WorkerPlan
from orchestrator.training.launch import TrainingJob, fit, plan_training

log = logging.getLogger(__name__)

SCORES = (VAL_TOP1_ERROR, VAL_TOP5_ERROR)  # the last epoch's, on the logged model


def train(config: ExperimentConfig) -> TrackedRun:
    """One training run: prepared shards -> Ray Data -> Ray Train workers -> one MLflow run. A
    run named like an earlier one (`name`) continues it; a second driver of a live one is
    refused."""
    run_name = config.name or default_run_name(config)
    data = open_data(config.data, config.prepare)
    job = plan_training(config, data, run_name)
    log.info(
        f"data: {redact_text(data.uri)} ({data.count('train')} training / "
        f"{data.count('val')} validation images of {data.image_size} px, "
        f"{len(data.classes)} classes)"
    )
    with sole_driver(job.plan.run_folder, "name", f"run '{run_name}'"):
        run = TrackedRun(config.tracking, run_name, resume=config.name is not None)
        identity.check_resume(job.plan, run_name, run)
        start(run, job, "train")
        log_unreported_epochs(run, job.plan)
        log.info(
            f"MLflow run {run.run_id} ('{run_name}'{', resumed' if run.resumed else ''}) in "
            f"{redacted(run.tracking_uri)}"
        )
        run_training(job, run)
    _print_summary(run)
    return run


def default_run_name(config: ExperimentConfig) -> str:
    """`<experiment>-<date>-<time>-<4 hex digits>`: two runs started in the same second get
    two names (and two checkpoint folders)."""
    return f"{config.tracking.experiment}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def start(run: TrackedRun, job: TrainingJob, kind: str, extra_tags: dict | None = None) -> None:
    """A training's start on its MLflow run: every config field of the training and the data's
    facts as params, its identity, kind and provenance as tags, its resolved config."""
    params = {
        **training_params(job.config),
        **job.data.params(),
        "train.use_gpu_resolved": job.use_gpu,
    }
    run_tags = {**job.identity_tags, **(extra_tags or {})}
    run.log_start(kind, params, to_yaml(job.config), run_tags)


def log_unreported_epochs(run: TrackedRun, plan: WorkerPlan) -> None:
    """Epochs whose checkpoints reached storage but whose reports never reached MLflow (Ctrl-C:
    Ray Train's workers finish an epoch or two while the run aborts), logged from the reports
    their checkpoints keep before training goes on, so the history has no gap; epochs that left
    no checkpoint are named."""
    if not run.tracked:
        return
    last = max(run.store.logged_epochs(run.run_id), default=0)
    newer = [
        stored
        for stored in stored_checkpoints(plan.run_folder)
        if stored.epoch > last and stored.training_digest in ("", plan.training_digest)
    ]
    for stored in newer:
        if stored.report:
            record = EpochMetrics.from_report(stored.report)
            run.log_metrics(record.logged(), step=stored.epoch)
            run.set_tags(tags.last_checkpoint(stored.uri, stored.epoch))
            print(f"{record.line()}  (from its checkpoint: it never reached MLflow)", flush=True)
    kept = {stored.epoch for stored in newer if stored.report}
    lost = [epoch for epoch in range(last + 1, max(kept, default=0)) if epoch not in kept]
    if lost:
        log.warning(
            f"epochs {', '.join(map(str, lost))} were trained, but neither MLflow nor a kept "
            "checkpoint holds their values (train.keep_checkpoints)"
        )


def run_training(
    job: TrainingJob,
    run: TrackedRun,
    storage_path: str | None = None,
    callbacks: tuple[ray.train.UserCallback, ...] = (),
    close_on_error: bool = True,
    outputs: bool = True,
) -> None:
    """Fit the job's TorchTrainer; the MLflow run ends FINISHED, FAILED or KILLED. A finished
    run gets its last checkpoint's servable model and the paper's figures (`tracking.figures`)
    unless `outputs=False`.

    `close_on_error=False` leaves a run that did not finish open for its owner to close (a sweep
    knows whether its scheduler stopped a trial, which the trial itself cannot tell).
    """
    run.log_dataset(job.data, "train")
    try:
        fit(
            dataclasses.replace(
                job.plan,
                system_metrics=run.system_metrics_target(),
                step_metrics=run.step_metrics_target(),
                log_level=logs.level(),
            ),
            datasets=job.datasets,
            run_name=job.config.name,
            callbacks=[epoch_logger(run), *callbacks],
            use_gpu=job.use_gpu,
            storage_path=storage_path,
            data_cpus=job.config.data.max_cpus,
        )
    except SystemExit:  # Ray Train's own Ctrl-C handler aborts the run, then exits
        if close_on_error:
            run.finish("KILLED")
        raise Interrupted(
            f"run '{job.config.name}' interrupted: its MLflow run is KILLED, its checkpoints "
            f"kept; the same command with --set name={job.config.name} goes on from the newest"
        ) from None
    except BaseException as error:
        if close_on_error:
            run.finish(ended_status(error))
        raise
    if outputs and run.tracked:
        log_outputs(run, job)
    run.finish("FINISHED")


def log_outputs(run: TrackedRun, job: TrainingJob) -> None:
    """The newest checkpoint of a finished training as the run's MLflow model (registered under
    `tracking.register_model` unless None) and its figures (`tracking.figures`)."""
    stored = newest_checkpoint(job.plan.run_folder, job.plan.training_digest)
    if stored is None:
        return
    trained = Trained.of(stored.uri, read_checkpoint(stored.uri), job.data)
    tracking, registration = run.config, None
    score = stored.report.get(VAL_TOP1_ERROR)
    if tracking.register_model is not None and score is not None:
        registration = Registration(
            tracking.register_model, tracking.register_alias, VAL_TOP1_ERROR, float(score)
        )
    scores = {key: stored.report[key] for key in SCORES if key in stored.report}
    message = log_trained_model(run, trained, registration, {"run": job.config.name, **scores})
    if message is not None:
        print(message, flush=True)
    if tracking.figures:
        log_figures(run, trained)


def _print_summary(run: TrackedRun) -> None:
    """The epoch table from what MLflow holds, and how to open the MLflow UI."""
    history = {key: dict(run.history(key)) for key, _, _ in SUMMARY_COLUMNS}
    print("\nepoch  " + "  ".join(title for _, title, _ in SUMMARY_COLUMNS))
    for epoch in sorted(history[SUMMARY_COLUMNS[0][0]]):
        cells = [
            shape.format(history[key].get(epoch, float("nan"))) for key, _, shape in SUMMARY_COLUMNS
        ]
        print(f"{epoch:>5}  " + "  ".join(cells))
    print(f"\nMLflow run {run.run_id} is in {redacted(run.tracking_uri)}")
    print(f"Open the MLflow UI:  {ui_command(run.tracking_uri)}")
