"""A sweep's trial runs in MLflow closed as Ray Tune ends each trial, with an honest status."""

from __future__ import annotations

import warnings

import ray.tune as tune

from orchestrator import tracking
from orchestrator.redact import redact_text
from orchestrator.search import SweepConfig


class CloseTrialRuns(tune.Callback):
    """Ends a trial's MLflow run as soon as Tune ends the trial (all epochs done, stopped by
    the scheduler, or failed), in the sweep's driver: the UI shows each trial's status while
    the sweep goes on, and a resumed sweep does not run a trial that already ended.

    Tune saves its callbacks with the sweep's state (in storage), so this one holds no tracking
    URI, which may carry a password: it finds its parent run among the driver's open sweeps."""

    open_sweeps: dict[str, tracking.TrackedRun] = {}  # parent run id -> the driver's handle

    def __init__(self, parent_run_id: str, spec: SweepConfig, epochs: int):
        self.parent_run_id, self.spec, self.epochs = parent_run_id, spec, epochs

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial.trial_id, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial.trial_id, failed=True)

    def _close(self, trial_id: str, failed: bool) -> None:
        parent = self.open_sweeps.get(self.parent_run_id)
        if parent is None:
            return
        try:
            for run in parent.child_runs():
                if run.data.tags.get("trial_id") == trial_id:
                    close_trial_run(parent, run.info.run_id, self.spec, self.epochs, failed)
        except Exception as error:  # noqa: BLE001 - the tracking server is away: not fatal
            warnings.warn(
                f"trial {trial_id}: its MLflow run stays open until the sweep ends "
                f"({redact_text(str(error))[:200]})",
                stacklevel=2,
            )


def close_trial_run(
    parent: tracking.TrackedRun, run_id: str, spec: SweepConfig, epochs: int, failed: bool
) -> None:
    """End a trial's run with an honest status: FAILED, or FINISHED, tagged early-stopped when
    the scheduler ended it before its last epoch. The epochs it trained are those its run holds:
    a trial's workers go on while the scheduler decides, and may finish the next epoch before
    they are stopped. Closing again (at the sweep's end) corrects an earlier close."""
    done = len(tracking.metric_history(parent.client, run_id, spec.metric))
    early = not failed and done < epochs
    tags = {"early_stopped": str(early).lower(), "stopped_after_epoch": done}
    parent.close_child(run_id, "FAILED" if failed else "FINISHED", tags)
