"""The Ray Tune plumbing a sweep and a study share: where a Tune experiment keeps its state,
its MLflow parent run, the CPUs each concurrent trial may give Ray Data, and the Tuner, new or
restored (`--resume`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import ray
import ray.tune as tune
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from orchestrator.common import locks, ray_cluster
from orchestrator.common.errors import ConfigError, Interrupted
from orchestrator.common.redact import redact_text
from orchestrator.common.storage import Location, absolute, for_ray
from orchestrator.config import sweep as sweep_config
from orchestrator.config.experiment import ExperimentConfig
from orchestrator.data.prepared import PreparedData
from orchestrator.data.sources import open_data
from orchestrator.experiments import trials
from orchestrator.experiments.trials import CloseTrialRuns
from orchestrator.tracking import tags
from orchestrator.tracking.config import resolve_tracking_uri
from orchestrator.tracking.run import TrackedRun, ended_status
from orchestrator.training.identity import describe, differences, digest, training_fields

log = logging.getLogger(__name__)

# A trial's own process only waits on its TorchTrainer, whose workers hold the real CPUs.
TRIAL_DRIVER_CPUS = 0.01
TUNE_FILE_LOGGERS_OFF = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"  # Ray Tune's documented switch
# Tune saves the experiment's callback (CloseTrialRuns, holding a SweepConfig) by module path;
# state saved before the packages moved names these modules
MOVED_MODULES = {"orchestrator.trial_runs": trials, "orchestrator.search": sweep_config}


@dataclass(frozen=True)
class ExperimentFolders:
    """Where a sweep or a study keeps its state: Tune's experiment in `<root>/<name>`, its
    trials' Ray Train runs (checkpoints) in `<root>/<name>/trials`."""

    root: str  # `<train.storage_path>/sweeps` (a path or URI): Tune's storage_path
    name: str

    @property
    def experiment(self) -> str:
        return f"{self.root}/{self.name}"

    @property
    def trials(self) -> str:
        return f"{self.experiment}/trials"


def folders(config: ExperimentConfig, name: str) -> ExperimentFolders:
    return ExperimentFolders(f"{absolute(config.train.storage_path)}/sweeps", name)


def sole_driver(config: ExperimentConfig, name: str, kind: str):
    """One driver at a time for the sweep or study `name` (a lock in its folder)."""
    return locks.sole_driver(folders(config, name).experiment, f"{kind}.name", f"{kind} '{name}'")


def open_parent(
    config: ExperimentConfig, name: str, kind: str, resume: bool, trainable
) -> tuple[ExperimentConfig, TrackedRun]:
    """The Tune experiment `name`'s MLflow parent run (`<kind>-<name>`), new or (`resume`) the
    interrupted one's; and the config with an absolute tracking URI, as trials need it (they
    run in other processes and directories). `trainable`: the function the trials run, which
    Tune records with its state (a sweep and a study of one name would share the folder). Starts
    Ray."""
    tracking = dataclasses.replace(config.tracking, uri=resolve_tracking_uri(config.tracking))
    config = dataclasses.replace(config, tracking=tracking)
    path = folders(config, name).experiment
    saved = saved_trainable(path)
    if saved not in (None, trainable.__name__):
        raise ConfigError(
            f"{kind}.name: '{name}' is another kind of experiment's in {redact_text(path)} (its "
            f"trials run {saved}, a {kind}'s run {trainable.__name__}); choose another "
            f"{kind}.name"
        )
    if not resume and can_restore(path):
        raise ConfigError(
            f"{kind}.name: '{name}' already ran in {redact_text(path)}; pass --resume to "
            f"continue it, or choose another {kind}.name"
        )
    parent = TrackedRun(
        config.tracking, f"{kind}-{name}", resume=resume, refuse_existing=not resume
    )
    if not parent.tracked:
        raise ConfigError(
            f"tracking.optional: a {kind} cannot run untracked (its trials are found again on "
            "--resume through their MLflow runs); start the tracking server first"
        )
    trials_before = parent.children() if parent.resumed else []
    if trials_before and not can_restore(path):
        parent.abandon()
        raise ConfigError(
            f"train.storage_path: --resume found no Tune state of {kind} '{name}' in "
            f"{redact_text(path)}, though its MLflow run {parent.run_id} holds "
            f"{len(trials_before)} trial runs (storage_path relative to another directory, or "
            "the folder moved?); a new grid there would mix old and new trials in one table. "
            f"Point train.storage_path at its state, or choose another {kind}.name"
        )
    ray_cluster.ensure_ray()
    ray_cluster.keep_credentials_out_of_ray_logs()
    ray_cluster.carry_source_into_trials()
    return config, parent


def identity_fields(
    config: ExperimentConfig, data_key: str, fixed: dict, varied: tuple[str, ...] = ()
) -> dict:
    """What makes a sweep or study the one it started as: the training of its base config
    (training/identity.py) with `train.epochs`, less the fields its trials `varied`, and the
    experiment's own `fixed` fields (its space, its groups, its seeds...)."""
    fields = {**training_fields(config, data_key), "train.epochs": config.train.epochs}
    fields = {key: value for key, value in fields.items() if key not in varied}
    fields.update({key: json.loads(json.dumps(value)) for key, value in fixed.items()})
    return {key: fields[key] for key in sorted(fields)}


def check_identity(parent: TrackedRun, kind: str, name: str, fields: dict) -> dict[str, str]:
    """Refuse to resume a sweep or study as another one than its parent run recorded at its
    first start (a changed seed, epochs, data, space or group would pair trials of two
    experiments in one table); returns the tags that record `fields` on the parent."""
    recorded = parent.record().training_fields if parent.resumed else None
    changed = differences(recorded, fields) if recorded is not None else {}
    if changed:
        parent.abandon()
        raise ConfigError(
            f"--resume: {kind} '{name}' started as another experiment than this one "
            f"({describe(changed)}); its finished trials would be compared with trials of the "
            f"new settings. Resume it with the settings it started with, or choose another "
            f"{kind}.name"
        )
    return tags.identity(digest(fields), fields)


def open_data_for_trials(
    config: ExperimentConfig, kind: str, concurrent: int
) -> tuple[ExperimentConfig, PreparedData]:
    """(config with each trial's CPU share for Ray Data, the prepared data). `concurrent`:
    the `<kind>.max_concurrent_trials`."""
    data = open_data(config.data, config.prepare)
    return share_cpus(config, kind, concurrent), data


@contextmanager
def removed_unless_started(parent: TrackedRun, kind: str, name: str):
    """A start that fails before Tune runs a trial (the data unreachable, the State API
    missing, a resume refused) leaves nothing in MLflow's way: a parent run it created is
    deleted, so the same command runs once the cause is fixed, and a resumed one keeps its
    status."""
    try:
        yield
    except BaseException:
        parent.abandon()
        if not parent.resumed and parent.tracked:
            log.info(
                f"MLflow: {kind} '{name}' ran no trial; its parent run {parent.run_id} is removed"
            )
        raise


def fit(parent: TrackedRun, tuner: tune.Tuner, kind: str, name: str, expected: int):
    """Run the Tune experiment; its trials' MLflow runs are closed as Tune ends them.

    Ctrl-C makes Tune save its state and return early, as if done: an interrupted fit (or one
    that ends with fewer than `expected` trials ended) raises `Interrupted` instead of returning
    a partial result. The trials still running are marked KILLED and so is the parent; `--resume`
    trains them on from their checkpoints. A fit that fails marks them FAILED."""
    CloseTrialRuns.open_sweeps[parent.run_id] = parent
    CloseTrialRuns.interrupted.discard(parent.run_id)
    try:
        results = tuner.fit()
        ended = results.num_terminated + results.num_errors
        if parent.run_id in CloseTrialRuns.interrupted or ended < expected:
            raise Interrupted(f"{kind} '{name}' interrupted")
        return results
    except BaseException as error:
        status = ended_status(error)
        for child in parent.children():
            if child.status == "RUNNING":
                parent.close_child(child.run_id, status)
        parent.finish(status)
        if isinstance(error, Interrupted):
            finished = sum(child.status == "FINISHED" for child in parent.children())
            raise Interrupted(
                f"{kind} '{name}' interrupted with {finished} of its {expected} trials "
                "finished: nothing summarised, no model registered. Continue it with the same "
                "command and --resume"
            ) from None
        raise
    finally:
        CloseTrialRuns.open_sweeps.pop(parent.run_id)
        CloseTrialRuns.interrupted.discard(parent.run_id)


@contextmanager
def closing(parent: TrackedRun):
    """Ends `parent` KILLED or FAILED when the block raises (it finishes it itself)."""
    try:
        yield
    except BaseException as error:
        parent.finish(ended_status(error))
        raise


def make_tuner(
    kind: str,
    where: ExperimentFolders,
    trainable,
    space: dict,
    tune_config: tune.TuneConfig,
    resume: bool,
    callback: CloseTrialRuns,
) -> tune.Tuner:
    """The Tuner of the `kind` (sweep, study) in `where`: restored from there on `resume`
    (finished trials are not run again; unfinished and failed ones run again, and their own
    training goes on from its last checkpoint), else new."""
    trainable = tune.with_resources(trainable, {"cpu": TRIAL_DRIVER_CPUS})
    # Tune's own CSV, JSON and TensorBoard result files per trial: MLflow holds every metric,
    # and without them Tune's console no longer offers a TensorBoard that is not installed
    os.environ[TUNE_FILE_LOGGERS_OFF] = "1"
    # ... whose absence Tune's result grid then warns of, for every trial, as it reads its
    # metrics (from MLflow here: experiments/sweep_results.py)
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    if resume and can_restore(where.experiment):
        log.info(f"resuming {kind} '{where.name}' from {redact_text(where.experiment)}")
        for old, module in MOVED_MODULES.items():
            sys.modules.setdefault(old, module)
        in_storage, filesystem = for_ray(where.experiment)
        return tune.Tuner.restore(
            in_storage,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=filesystem,
        )
    in_storage, filesystem = for_ray(where.root)
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune_config,
        run_config=tune.RunConfig(
            name=where.name,
            storage_path=in_storage,
            storage_filesystem=filesystem,
            callbacks=[callback],
        ),
    )


def saved_trainable(path: str) -> str | None:
    """The function whose trials the Tune experiment saved in `path` ran (Tune's newest
    experiment state names it for each trial), or None when there is none to read."""
    where = Location.of(path)
    states = [n for n in where.names() if n.startswith("experiment_state-") and n.endswith(".json")]
    try:
        trials = where.read_json(max(states))["trial_data"] if states else []
        return json.loads(trials[0][0])["trainable_name"] if trials else None
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def can_restore(path: str) -> bool:
    in_storage, filesystem = for_ray(path)
    return tune.Tuner.can_restore(in_storage, storage_filesystem=filesystem)


def share_cpus(config: ExperimentConfig, kind: str, concurrent: int) -> ExperimentConfig:
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


def require_state_api() -> None:
    """Trials that the scheduler stops must give their CPUs back, which needs Ray's State API.

    Tune stops a trial by killing its process; Ray Train then frees the trial's worker CPUs
    once its placement-group cleaner sees (through the State API, served by Ray's dashboard)
    that the trial's controller is gone. Without it the next trials wait for CPUs forever.
    """
    from ray.util.state import list_actors
    from ray.util.state.exception import RayStateApiException

    joined, url = ray.get_runtime_context().gcs_address, ray_cluster.dashboard_url()
    if not url:
        raise ConfigError(
            f"sweep.scheduler: an early-stopping scheduler needs Ray's State API, which the Ray "
            f"cluster this command joined ({joined}) does not serve: it runs no dashboard "
            "(started with --include-dashboard=false?); start Ray with its dashboard, or use "
            "sweep.scheduler: fifo"
        )
    try:
        for attempt in Retrying(  # a local Ray's dashboard takes seconds to come up
            stop=stop_after_delay(30),
            wait=wait_fixed(1),
            retry=retry_if_exception_type((RayStateApiException, ConnectionError)),
            reraise=True,
        ):
            with attempt:
                list_actors(address=url, limit=1, timeout=10)  # this cluster's, no other's
        return
    except (RayStateApiException, ConnectionError) as error:
        failure = error
    raise ConfigError(
        f"sweep.scheduler: an early-stopping scheduler needs Ray's State API; the dashboard of "
        f"the Ray cluster this command joined ({joined}) at {url} did not answer for 30 s "
        f"({type(failure).__name__}); check that it is up (`ray status`, or its URL in a "
        "browser), or use sweep.scheduler: fifo"
    ) from failure
