"""The steps that commands share: joining Ray, opening prepared data, one training run.

`train` runs one `TrainingJob` under one MLflow run; `sweep` runs one per trial, each under a
child run of the sweep's parent run. Both go through `plan_training` and `run_training`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass

import ray
import ray.data
import ray.train

from orchestrator import data as data_pipeline
from orchestrator import identity, tracking
from orchestrator import prepare as prepare_job
from orchestrator import train as trainer
from orchestrator.checkpoints import newest_checkpoint
from orchestrator.config import ExperimentConfig, flatten, to_yaml
from orchestrator.errors import ConfigError
from orchestrator.prepare import PrepareConfig, PrepareResult
from workloads.alexnet.transforms import BatchTransform


def ensure_ray() -> None:
    """Join the cluster in RAY_ADDRESS (or the job's cluster), else start a local one."""
    if ray.is_initialized():
        return
    # Ray Data logs several INFO lines per dataset execution (every epoch), which would bury the
    # epoch summaries; its warnings still show. The processes of a local Ray inherit this
    # setting; RAY_DATA_LOG_LEVEL=INFO brings the lines back.
    if "RAY_DATA_LOG_LEVEL" not in os.environ:
        os.environ["RAY_DATA_LOG_LEVEL"] = "WARNING"
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # configured at import
    ray.init(address=os.environ.get("RAY_ADDRESS"))
    quiet_progress_bars()


def quiet_progress_bars() -> None:
    """Our own lines report progress (per shard, per step, per epoch); Ray Data's bars, drawn by
    actors whose output is relayed line by line, turn into noise in logs."""
    ray.data.DataContext.get_current().enable_progress_bars = False
    # ... and its warning that they are off (here; Ray Data's own actors still say it once)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def cluster_shape() -> dict[str, str]:
    resources = ray.cluster_resources()
    return {
        "cluster_nodes": str(len([n for n in ray.nodes() if n["Alive"]])),
        "cluster_cpus": f"{resources.get('CPU', 0):g}",
        "cluster_gpus": f"{resources.get('GPU', 0):g}",
    }


def report_prepare(result: PrepareResult) -> None:
    if result.skipped:
        print(f"prepared data: {result.out} (already complete: {result.images['train']} training "
              f"/ {result.images['val']} validation images)", flush=True)  # fmt: skip
        return
    resumed = result.total - result.processed
    earlier = f"; {resumed} done by an earlier run" if resumed else ""
    print(f"prepare: {sum(result.images.values())} images ({result.images['train']} train, "
          f"{result.images['val']} val) in {result.out}; {result.rejects} rejected (see "
          f"{result.rejects_file}). This run: {result.processed} files in {result.seconds:.1f} s, "
          f"{result.images_per_second:.0f} images/s, {result.images_per_second_per_core:.0f} "
          f"images/s per CPU core ({result.cpus:g} cores){earlier}", flush=True)  # fmt: skip


def check_rejects(result: PrepareResult, config: PrepareConfig) -> None:
    if not result.complete:
        raise ConfigError(
            f"prepare: {result.rejects} of {result.total} files could not be read "
            f"({result.rejects / result.total:.2%}), more than prepare.max_reject_fraction "
            f"({config.max_reject_fraction:g}); they are listed in {result.rejects_file}"
        )


def open_data(config: ExperimentConfig, check=None) -> data_pipeline.PreparedData:
    """The config's prepared data, preparing a raw source first (once). Starts Ray.

    Bad paths fail before Ray starts, and so does `check(data)` on prepared data (a raw source
    is checked once it is prepared).
    """
    raw = data_pipeline.raw_source(config.data, config.prepare)
    if raw is None:
        data = data_pipeline.open_prepared(config.data.root)
        if check is not None:
            check(data)
        ensure_ray()
        return data
    splits = prepare_job.list_source(raw)
    ensure_ray()
    result = data_pipeline.prepare_source(raw, splits)
    report_prepare(result)
    check_rejects(result, raw)
    data = data_pipeline.open_prepared(result.out)
    if check is not None:
        check(data)
    return data


def batch_transform(config: ExperimentConfig, data: data_pipeline.PreparedData) -> BatchTransform:
    return BatchTransform(
        crop_size=config.model.input_size,
        mean_image=data.stats.mean_image if config.data.mean_subtraction else None,
        eigenvalues=data.stats.eigenvalues,
        eigenvectors=data.stats.eigenvectors,
        pca_noise_std=config.data.pca_noise_std,
        flip=config.data.flip,
        seed=config.seed,
    )


@dataclass
class TrainingJob:
    """Everything one `TorchTrainer` run needs, checked against the data."""

    config: ExperimentConfig  # with name and model.num_classes resolved
    data: data_pipeline.PreparedData
    use_gpu: bool
    loop_config: dict
    datasets: dict

    @property
    def settings(self) -> trainer.WorkerSettings:
        return self.loop_config["settings"]

    @property
    def identity_tags(self) -> dict[str, str]:
        """The training's identity on its MLflow run (compared when it is resumed)."""
        return {"training_digest": self.settings.training_digest,
                "training_fields": json.dumps(self.settings.training_fields)}  # fmt: skip

    @property
    def params(self) -> dict:
        """The MLflow params: every config field, and the data's facts."""
        config, data = self.config, self.data
        fields = flatten(dataclasses.replace(config, model=config.model.resolved()))
        return {
            **{k: v for k, v in fields.items() if not k.startswith("sweep.")},
            "data.prepared_uri": data.uri,
            "data.num_train_images": data.count("train"),
            "data.num_val_images": data.count("val"),
            "data.num_classes": len(data.classes),
            "data.image_size": data.image_size,
            "data.rejects": data.manifest["rejects"],
            "train.use_gpu_resolved": self.use_gpu,
        }


def plan_training(
    config: ExperimentConfig, data: data_pipeline.PreparedData, run_name: str
) -> TrainingJob:
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
    fields = identity.training_fields(config, data.manifest.get("key", data.uri))
    use_gpu = trainer.resolve_use_gpu(config.train)
    trainer.check_capacity(config.train, use_gpu, config.data.decode_cpus)
    images_per_worker = data.count("train") // config.train.num_workers  # an equal split
    settings = trainer.WorkerSettings(
        train=config.train,
        steps_per_epoch=max(1, images_per_worker // config.train.batch_size_per_worker),
        prefetch_batches=config.data.prefetch_batches,
        pin_memory=use_gpu,
        seed=config.seed,
        config_yaml=to_yaml(config),
        classes=tuple(data.classes),
        training_digest=identity.digest(fields),
        training_fields=fields,
        run_folder=trainer.run_folder(config.train, run_name),
    )
    return TrainingJob(
        config=config,
        data=data,
        use_gpu=use_gpu,
        loop_config={
            "model": config.model,
            "optim": config.optim,
            "settings": settings,
            "transform": batch_transform(config, data),
        },
        datasets={
            "train": data_pipeline.decoded_stream(data, "train", config.data, seed=config.seed),
            "val": data_pipeline.decoded_stream(data, "val", config.data, seed=None),
        },
    )


def with_storage(job: TrainingJob, storage_path: str) -> TrainingJob:
    """The job with its Ray Train run folder under `storage_path` (a sweep's trials folder)."""
    folder = trainer.run_folder(job.config.train, job.config.name, storage_path)
    settings = dataclasses.replace(job.settings, run_folder=folder)
    return dataclasses.replace(job, loop_config={**job.loop_config, "settings": settings})


def check_resume(job: TrainingJob, run: tracking.TrackedRun) -> None:
    """Refuse to continue a run (same name) as another training, or into a history whose
    checkpoints are gone: either would mix two trainings in one model or one MLflow run.

    Compares the training's fields with its newest checkpoint in storage and with its MLflow
    run's; `train.resume_changed: true` lets changed fields through with a printed line (the
    MLflow run then records the new values in its `resumed_with.*` tags).
    """
    settings, name = job.settings, job.config.name
    stored = newest_checkpoint(settings.run_folder)
    recorded = run.recorded_tags() if run.resumed else {}
    sources = []
    if stored is not None and stored.training_fields:
        sources.append((f"its checkpoint of epoch {stored.epoch}", stored.training_fields))
    if "training_fields" in recorded:
        sources.append((f"its MLflow run {run.run_id}", json.loads(recorded["training_fields"])))
    try:
        for where, fields in sources:
            changed = identity.differences(fields, settings.training_fields)
            if not changed:
                continue
            if not job.config.train.resume_changed:
                raise identity.refuse_changed(name, where, changed)
            print(f"resuming '{name}' with changed training fields (train.resume_changed): "
                  f"{identity.describe(changed)}", flush=True)  # fmt: skip
        _check_checkpoints_kept(run, recorded, stored, settings.run_folder)
    except ConfigError:
        run.abandon()
        raise


def _check_checkpoints_kept(run, recorded: dict, stored, run_folder: str) -> None:
    """An MLflow run that recorded a checkpoint must find it (or a newer one) in storage."""
    path, epoch = tracking.last_checkpoint(recorded)
    if path is None:
        return
    if stored is None or stored.epoch < epoch:
        found = f"the newest there is of epoch {stored.epoch}" if stored else "none is there"
        raise ConfigError(
            f"train.storage_path: MLflow run {run.run_id} holds epochs up to {epoch} with a "
            f"checkpoint, but {tracking.redacted(run_folder)} has no checkpoint of that epoch "
            f"({found}: deleted, or storage_path changed). Resuming would restart the model "
            "and mix two trainings in one MLflow run: point train.storage_path at its "
            "checkpoints, or choose another name for a new run"
        )


def run_training(
    job: TrainingJob,
    run: tracking.TrackedRun,
    storage_path: str | None = None,
    callbacks: tuple[ray.train.UserCallback, ...] = (),
    close_on_error: bool = True,
) -> None:
    """Fit the job's TorchTrainer; the MLflow run ends FINISHED, FAILED or KILLED.

    `close_on_error=False` leaves a run that did not finish open for its owner to close (a sweep
    knows whether its scheduler stopped a trial, which the trial itself cannot tell).
    """
    try:
        trainer.fit(
            {**job.loop_config, "system_metrics": run.system_metrics_target()},
            job.config.train,
            datasets=job.datasets,
            run_name=job.config.name,
            callbacks=[run.epoch_logger(), *callbacks],
            use_gpu=job.use_gpu,
            storage_path=storage_path,
            data_cpus=job.config.data.max_cpus,
        )
    except BaseException as error:
        if close_on_error:
            run.finish("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    run.finish("FINISHED")
