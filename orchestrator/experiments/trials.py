"""A trial of a sweep or a study: one training run (its own TorchTrainer) in an MLflow run nested
under the experiment's parent run, closed with an honest status as Ray Tune ends it."""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
import warnings

import ray.tune as tune
from ray.tune.integration.ray_train import TuneReportCallback

from orchestrator.common import logs
from orchestrator.common.ray_cluster import quiet_progress_bars
from orchestrator.common.redact import redact_text
from orchestrator.config.experiment import load_config_text
from orchestrator.data.prepared import open_prepared
from orchestrator.experiments.training_run import log_unreported_epochs, run_training, start
from orchestrator.tracking import tags
from orchestrator.tracking.metrics import EPOCH
from orchestrator.tracking.run import TrackedRun
from orchestrator.training import identity
from orchestrator.training.launch import plan_training, with_storage


def run_trial(
    params: dict,
    base_yaml: str,
    data_uri: str,
    parent_run_id: str,
    storage: str,
    extra_tags: dict | None = None,
):
    """One trial: the base config with `params` (config field -> value), trained by its own
    TorchTrainer, in an MLflow run nested under the parent and tagged with `extra_tags` too. (Tune
    knows a trainable by its function's name: a sweep saved by an earlier version resumes only
    if this one keeps it.)"""
    trial_id = tune.get_context().get_trial_id()
    overrides = [f"{key}={json.dumps(value)}" for key, value in params.items()]
    config = load_config_text(base_yaml, overrides)
    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, source="prepared", root=data_uri)
    )
    run_name = f"{config.sweep.name}-{trial_id}"
    run = TrackedRun(config.tracking, run_name, resume=True, parent_run_id=parent_run_id)
    done = run.last_epoch()
    if run.previous_status == "FINISHED" or done >= config.train.epochs:
        # Ended (all its epochs, or stopped by the scheduler: `CloseTrialRuns`) before the
        # sweep's driver stopped, after Tune last saved its state: report the run's final
        # metrics instead of training it again.
        if logs.level() <= logging.INFO:  # (a trial actor: its lines reach the driver printed)
            print(f"trial {trial_id} already finished (MLflow run {run.run_id})", flush=True)
        run.abandon()  # its status as it was
        tune.report({**run.record().metrics, EPOCH: done})
        return
    quiet_progress_bars()
    job = plan_training(config, open_prepared(data_uri), run_name)
    job = with_storage(job, storage)
    identity.check_resume(job.plan, run_name, run)
    trial_tags = {tags.TRIAL_ID: trial_id, tags.SWEEP: config.sweep.name, **(extra_tags or {})}
    start(run, job, "trial", trial_tags)
    log_unreported_epochs(run, job.plan)
    # No model or figures here: Tune ends a trial at its last report; the sweep logs its best
    # trial's
    run_training(
        job,
        run,
        storage_path=storage,
        callbacks=(TuneReportCallback(),),
        close_on_error=False,
        outputs=False,
    )


class CloseTrialRuns(tune.Callback):
    """Ends a trial's MLflow run as soon as Tune ends the trial (all epochs done, stopped by
    the scheduler, or failed), in the sweep's driver: the UI shows each trial's status while
    the sweep goes on, and a resumed sweep does not run a trial that already ended.

    Tune saves its callbacks with the sweep's state (in storage), so this one holds no tracking
    URI, which may carry a password: it finds its parent run among the driver's open sweeps.
    (Tune finds the class again by its module path: experiments/tuning.py maps the path of
    state saved before the packages moved.)"""

    open_sweeps: dict[str, TrackedRun] = {}  # parent run id -> the driver's handle
    interrupted: set[str] = set()  # parent run ids whose experiment Ctrl-C ended

    def __init__(self, parent_run_id: str, epochs: int, stops_early: bool = True):
        self.parent_run_id, self.epochs = parent_run_id, epochs
        self.stops_early = stops_early  # a scheduler that stops trials (fifo: none)

    def setup(self, **info):
        """Notes a Ctrl-C for the driver: Tune ends the experiment early and returns as if it
        were done (it marks the trials it stops TERMINATED), so only the signal tells an
        interrupted experiment from a finished one. Tune's own handler still runs: it saves the
        experiment's state, for --resume."""
        if threading.current_thread() is not threading.main_thread():
            return  # (signals reach the main thread only)
        tune_handler, parent = signal.getsignal(signal.SIGINT), self.parent_run_id

        def note_and_stop(signum, frame):
            CloseTrialRuns.interrupted.add(parent)
            if callable(tune_handler):
                tune_handler(signum, frame)

        signal.signal(signal.SIGINT, note_and_stop)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial.trial_id, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial.trial_id, failed=True)

    def _close(self, trial_id: str, failed: bool) -> None:
        parent = self.open_sweeps.get(self.parent_run_id)
        if parent is None:
            return
        try:
            for run in parent.children():
                if run.trial_id == trial_id:
                    stops_early = getattr(self, "stops_early", True)  # (state saved before)
                    close_trial_run(parent, run.run_id, self.epochs, failed, stops_early)
        except Exception as error:  # noqa: BLE001 - the tracking server is away: not fatal
            warnings.warn(
                f"trial {trial_id}: its MLflow run stays open until the sweep ends "
                f"({redact_text(str(error))[:200]})",
                stacklevel=2,
            )


def close_trial_run(
    parent: TrackedRun, run_id: str, epochs: int, failed: bool, stops_early: bool = True
) -> None:
    """End a trial's run with an honest status: FAILED, or FINISHED, tagged early-stopped when
    the scheduler (one that `stops_early`) ended it before its last epoch. The epochs it trained
    are those its run holds: a trial's workers go on while the scheduler decides, and may finish
    the next epoch before they are stopped. Closing again (at the sweep's end) corrects an
    earlier close."""
    done = parent.store.last_epoch(run_id)
    early = stops_early and not failed and done < epochs
    parent.close_child(run_id, "FAILED" if failed else "FINISHED", tags.trial_end(early, done))
