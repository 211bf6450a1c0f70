"""Launching training from the driver: plan a run against its data and cluster, then fit it.

`plan_training` checks the config against the prepared data and the cluster (GPUs, CPUs left
for Ray Data) and builds the `WorkerPlan` every worker receives; `fit` runs one `TorchTrainer`
(training/worker.py on each worker) to completion. The MLflow run around it is the experiment
layer's (experiments/training_run.py): `train` runs one; a sweep runs one per trial.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass

import ray
import ray.data
import ray.train
import ray.train.torch

from orchestrator.common import storage
from orchestrator.common.errors import ConfigError
from orchestrator.common.redact import redact_text
from orchestrator.common.yaml_config import to_yaml
from orchestrator.data.feed import Feed, decode_place, decode_threads
from orchestrator.data.prepared import PreparedData
from orchestrator.data.streams import split_stream
from orchestrator.tracking import tags
from orchestrator.training import identity
from orchestrator.training.config import TrainConfig, TrainingSections, WorkerPlan
from orchestrator.training.transform import batch_transform
from orchestrator.training.worker import train_fn_per_worker

log = logging.getLogger(__name__)


@dataclass
class TrainingJob:
    """Everything one `TorchTrainer` run needs, checked against the data."""

    config: TrainingSections  # with name and model.num_classes resolved
    data: PreparedData
    use_gpu: bool
    plan: WorkerPlan
    datasets: dict[str, ray.data.Dataset]

    @property
    def identity_tags(self) -> dict[str, str]:
        """The training's identity on its MLflow run (compared when it is resumed)."""
        return tags.identity(self.plan.training_digest, self.plan.training_fields)


def plan_training(config: TrainingSections, data: PreparedData, run_name: str) -> TrainingJob:
    num_classes = len(data.classes)
    if config.model.num_classes not in (None, num_classes):
        raise ConfigError(
            f"model.num_classes: got {config.model.num_classes}, but the data has {num_classes} "
            "classes; leave it unset to take it from the data"
        )
    if data.image_size < config.model.input_size:
        raise ConfigError(
            f"model.input_size: got {config.model.input_size}; allowed: <= the prepared images' "
            f"{data.image_size} px ({data.uri})"
        )
    config = dataclasses.replace(
        config, name=run_name, model=dataclasses.replace(config.model, num_classes=num_classes)
    )
    fields = identity.training_fields(config, data.key)
    use_gpu = resolve_use_gpu(config.train)
    check_capacity(config.train, use_gpu, config.data.decode_cpus)
    place = decode_place(config.data, data.encoding, use_gpu)
    plan = WorkerPlan(
        model=config.model,
        optim=config.optim,
        train=config.train,
        transform=batch_transform(config.data, data, config.model.input_size, config.seed),
        steps_per_epoch=steps_per_epoch(config.train, data.count("train")),
        prefetch_batches=config.data.prefetch_batches,
        shuffle_rows=config.data.shuffle_rows,
        pin_memory=use_gpu,
        feed=Feed(place, data.image_size, threads=decode_threads(config.train.cpus_per_worker)),
        seed=config.seed,
        config_yaml=to_yaml(config),
        classes=tuple(data.classes),
        training_digest=identity.digest(fields),
        training_fields=fields,
        run_folder=run_folder(config.train, run_name),
        progress_bar=sys.stdout.isatty(),
        data={"uri": redact_text(data.uri), "key": data.key},  # (no secret into a checkpoint)
    )
    return TrainingJob(
        config=config,
        data=data,
        use_gpu=use_gpu,
        plan=plan,
        datasets={
            split: split_stream(data, split, config.data, seed=seed, decode=place == "tasks")
            for split, seed in (("train", config.seed), ("val", None))
        },
    )


def with_storage(job: TrainingJob, storage_path: str) -> TrainingJob:
    """The job with its Ray Train run folder under `storage_path` (a sweep's trials folder)."""
    folder = run_folder(job.config.train, job.config.name, storage_path)
    return dataclasses.replace(job, plan=dataclasses.replace(job.plan, run_folder=folder))


def steps_per_epoch(config: TrainConfig, train_images: int) -> int:
    """Steps each worker takes per epoch: its equal share of the images, in whole batches."""
    return max(1, train_images // config.num_workers // config.batch_size_per_worker)


def resolve_use_gpu(config: TrainConfig) -> bool:
    """`train.use_gpu`, or when unset: GPUs if the cluster has enough for every worker."""
    if config.use_gpu is not None:
        return config.use_gpu
    gpus = ray.cluster_resources().get("GPU", 0)
    needed = config.num_workers * config.devices_per_worker
    if 0 < gpus < needed:
        log.warning(
            f"the cluster has {gpus:g} GPU(s); {config.num_workers} workers with "
            f"{config.devices_per_worker} each need {needed}: training on CPU"
        )
    return gpus >= needed


def check_capacity(config: TrainConfig, use_gpu: bool, data_cpus: float) -> None:
    """Fail fast when the worker group cannot start, or would leave Ray Data no CPU at all."""
    cluster_cpus = ray.cluster_resources().get("CPU", 0)
    needed = config.num_workers * config.cpus_per_worker
    if needed > cluster_cpus:
        raise ConfigError(
            f"train.num_workers x train.cpus_per_worker = {needed:g} CPUs, but the cluster has "
            f"{cluster_cpus:g}: lower one of them"
        )
    if cluster_cpus - needed < data_cpus:
        raise ConfigError(
            f"train.num_workers x train.cpus_per_worker = {needed:g} of the cluster's "
            f"{cluster_cpus:g} CPUs leaves less than data.decode_cpus ({data_cpus:g}) for the Ray "
            "Data tasks that feed them: lower train.cpus_per_worker (e.g. 0.75) or "
            "data.decode_cpus"
        )
    needed_gpus = config.num_workers * config.devices_per_worker
    if use_gpu and ray.cluster_resources().get("GPU", 0) < needed_gpus:
        raise ConfigError(
            f"train.use_gpu is true but the cluster has fewer than {needed_gpus} GPUs "
            f"({config.num_workers} workers x {config.devices_per_worker})"
        )


def fit(
    plan: WorkerPlan,
    datasets: dict[str, ray.data.Dataset],
    run_name: str,
    callbacks: list[ray.train.UserCallback],
    use_gpu: bool,
    storage_path: str | None = None,
    data_cpus: float | None = None,
) -> ray.train.Result:
    """Run the worker group to completion; raises when training fails.

    `storage_path` (default `train.storage_path`) holds the run's folder `<run_name>/`;
    `data_cpus` caps the CPUs the run's Ray Data streams may hold (None: whatever is free).
    """
    train_config = plan.train
    # Our own execution options, always: Ray Train's defaults set the deprecated
    # `exclude_resources` (a RayDeprecationWarning in every run's log)
    limits = ray.data.ExecutionResources(cpu=data_cpus) if data_cpus is not None else None
    dataset_config = ray.train.DataConfig(
        execution_options=ray.data.ExecutionOptions(resource_limits=limits)
    )
    resources = {**train_config.resources_per_worker, "CPU": train_config.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = train_config.devices_per_worker  # two for the towers
    path, filesystem = storage.for_ray(storage_path or train_config.storage_path)
    torch_trainer = ray.train.torch.TorchTrainer(
        train_fn_per_worker,
        train_loop_config={"plan": plan},
        scaling_config=ray.train.ScalingConfig(
            num_workers=train_config.num_workers,
            use_gpu=use_gpu,
            resources_per_worker=resources,
        ),
        datasets=datasets,
        dataset_config=dataset_config,
        run_config=ray.train.RunConfig(
            name=run_name,  # the same name in the same storage_path resumes that run
            storage_path=path,
            storage_filesystem=filesystem,
            callbacks=callbacks,
            failure_config=ray.train.FailureConfig(max_failures=train_config.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=train_config.keep_checkpoints),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),  # no per-report echo
        ),
    )
    return torch_trainer.fit()


def run_folder(config: TrainConfig, run_name: str, storage_path: str | None = None) -> str:
    """Where Ray Train keeps the run `run_name`: `<storage_path>/<run_name>` (a path or URI)."""
    return f"{storage.absolute(storage_path or config.storage_path)}/{run_name}"
