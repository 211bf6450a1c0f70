"""`--dry-run`: what `train` (or a `sweep`, a `study`) would do, printed, without doing it: the
workers and their CPUs or GPUs, what is left for Ray Data, where the data is (or what would
prepare it), where JPEGs are decoded, steps per epoch, where checkpoints (or Tune's state) go,
and whether the run is new or continues one (from which checkpoint); for a sweep or study, its
trials. Nothing is generated, prepared, tracked or trained; Ray is joined (or started) to read
the cluster's size."""

from __future__ import annotations

import ray

from orchestrator.common import ray_cluster
from orchestrator.common.redact import redact_text
from orchestrator.config.experiment import ExperimentConfig
from orchestrator.data.feed import decode_place
from orchestrator.data.prepared import PreparedData
from orchestrator.data.sources import find_prepared
from orchestrator.experiments import tuning
from orchestrator.experiments.training_run import default_run_name
from orchestrator.tracking.config import redacted, resolve_tracking_uri
from orchestrator.tracking.reads import run_named
from orchestrator.training.checkpoints import newest_checkpoint
from orchestrator.training.launch import (
    check_capacity,
    resolve_use_gpu,
    run_folder,
    steps_per_epoch,
)


def training_plan(config: ExperimentConfig) -> list[str]:
    """The lines `train --dry-run` prints."""
    name = config.name or default_run_name(config)
    data, first = find_prepared(config.data, config.prepare)
    ray_cluster.ensure_ray()
    train = config.train
    use_gpu = resolve_use_gpu(train)
    check_capacity(train, use_gpu, config.data.decode_cpus)  # a plan that cannot start: refused
    cpus = ray.cluster_resources().get("CPU", 0)
    held = train.num_workers * train.cpus_per_worker
    share = config.data.max_cpus if config.data.max_cpus is not None else cpus - held
    gpus = f" and {train.devices_per_worker} GPU(s)" if use_gpu else " (no GPU)"
    lines = [
        f"plan of run '{name}' (--dry-run: nothing is prepared, tracked or trained)",
        f"workers: {train.num_workers} x {train.cpus_per_worker:g} CPU{gpus}, parallel "
        f"{train.parallel}; Ray Data: up to {share:g} of the cluster's {cpus:g} CPUs",
    ]
    lines += _data_lines(config, data, first, use_gpu)
    lines += _run_lines(config, name)
    return lines


def _data_lines(
    config: ExperimentConfig, data: PreparedData | None, first: str, use_gpu: bool
) -> list[str]:
    train = config.train
    batch = f"batch {train.batch_size_per_worker} per worker ({train.global_batch_size} global)"
    if data is None:
        return [f"data: {first}", f"{batch}, {train.epochs} epochs"]
    steps = steps_per_epoch(train, data.count("train"))
    return [
        f"data: {redact_text(data.uri)} ({data.count('train')} training / {data.count('val')} "
        f"validation images of {data.image_size} px, {len(data.classes)} classes), decoded by "
        f"the {decode_place(config.data, data.encoding, use_gpu)} place",
        f"{batch}, {steps} steps per epoch, {train.epochs} epochs",
    ]


def _run_lines(config: ExperimentConfig, name: str) -> list[str]:
    folder = run_folder(config.train, name)
    stored = newest_checkpoint(folder)
    existing = run_named(config.tracking, name) if config.name else None
    uri = redacted(resolve_tracking_uri(config.tracking))
    where = f"experiment '{config.tracking.experiment}' in {uri}"
    if existing is not None:
        resumes = f"continues MLflow run {existing.run_id} ({existing.status})"
    else:
        resumes = "a new MLflow run"
    if stored is not None:
        resumes += f", from the checkpoint of epoch {stored.epoch} ({redact_text(stored.uri)})"
        if existing is None and not config.train.resume_unrecorded:
            resumes += " - refused: no MLflow run records it (train.resume_unrecorded)"
    return [f"checkpoints: {redact_text(folder)}", f"MLflow: {resumes}, {where}"]


def experiment_plan(
    config: ExperimentConfig, kind: str, name: str, trials: str, concurrent: int, resume: bool
) -> list[str]:
    """The lines `sweep --dry-run` and `study --dry-run` print. `trials`: how many, and what."""
    data, first = find_prepared(config.data, config.prepare)
    ray_cluster.ensure_ray()
    train = config.train
    shared = tuning.share_cpus(config, kind, concurrent)  # trials that cannot fit: refused
    cpus = ray.cluster_resources().get("CPU", 0)
    lines = [
        f"plan of {kind} '{name}' (--dry-run: nothing is prepared, tracked or trained)",
        f"trials: {trials}, {concurrent} at a time; each {train.num_workers} x "
        f"{train.cpus_per_worker:g} CPU and up to {shared.data.max_cpus:g} CPUs for Ray Data, "
        f"of the cluster's {cpus:g}",
    ]
    lines += _data_lines(config, data, first, resolve_use_gpu(train))
    folder = tuning.folders(config, name).experiment
    ran = tuning.can_restore(folder)
    if ran:
        state = "resumed (--resume)" if resume else "refused: it ran already; pass --resume"
    else:
        state = "a new Tune experiment"
    parent = run_named(config.tracking, f"{kind}-{name}")
    uri = redacted(resolve_tracking_uri(config.tracking))
    recorded = f"continues MLflow run {parent.run_id} ({parent.status})" if parent else "a new"
    return lines + [
        f"Tune state and trials' checkpoints: {redact_text(folder)}: {state}",
        f"MLflow: {recorded} parent run, experiment '{config.tracking.experiment}' in {uri}",
    ]
