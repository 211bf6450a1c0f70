"""The training section of the config and the plan the driver hands each training worker.

`TrainConfig` says how a run trains (epochs, batch, workers, placement, checkpoints, precision);
`WorkerPlan` is the one typed object that crosses from the driver (training/launch.py) to the
workers (training/worker.py); `TrainingSections` is what training reads of an experiment's
config. This module imports neither torch nor Ray.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from orchestrator.common.errors import check_custom_resources

if TYPE_CHECKING:
    from orchestrator.data.config import DataConfig
    from orchestrator.data.feed import Feed
    from orchestrator.tracking.steps import StepMetricsTarget
    from orchestrator.tracking.system_metrics import SystemMetricsTarget
    from workloads.alexnet.config import ModelConfig, OptimizerConfig
    from workloads.alexnet.transforms import BatchTransform


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 90  # the paper trained ~90 epochs
    global_batch_size: int = 128  # summed over workers; the paper's 128
    num_workers: int = 2  # Ray Train workers (one process each)
    # data: DDP, one device per worker; towers: the paper's two-tower split over a worker's two
    # devices (one worker); hybrid: towers in each worker x DDP across the workers
    parallel: Literal["data", "towers", "hybrid"] = "data"
    use_gpu: bool | None = None  # None: use GPUs when the cluster has one per worker
    cpus_per_worker: float = 1.0  # leave some CPUs free for Ray Data on small machines
    # custom Ray resources each worker also needs, e.g. {trainer: 0.01}: only nodes that offer
    # them host training workers (see docs/clusters.md)
    resources_per_worker: dict[str, float] = field(default_factory=dict)
    storage_path: str = "results"  # Ray Train run folders (use shared storage on a cluster)
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch always gets one)
    keep_checkpoints: int = 2  # the newest ones kept in storage_path/<run name>/
    max_failures: int = 3  # worker-group restarts from the last checkpoint before giving up
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPUs
    channels_last: bool | None = None  # None: on GPUs
    compile: bool = False  # torch.compile the model
    # every n steps: rank 0's step/* metrics in MLflow (loss, lr, images/s on the global step
    # axis) and its progress line (without a bar); 0: per epoch only
    log_every_n_steps: int = 50
    ten_crop: bool = False  # after the last epoch, also the paper's ten-crop validation
    # true: resume a run by name although fields that define its training changed (model, data,
    # optimizer, batch, seed: training/identity.py); false refuses such a resume
    resume_changed: bool = False
    # true: a new MLflow run may continue from checkpoints that storage_path/<name> holds but no
    # MLflow run of this name records (its tracking store was deleted); false refuses: they may
    # be another experiment's run of the same name
    resume_unrecorded: bool = False

    def __post_init__(self):
        for name in ("epochs", "global_batch_size", "num_workers", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: got {getattr(self, name)}; allowed: an integer >= 1")
        if self.keep_checkpoints < 1 or self.max_failures < 0:
            raise ValueError("keep_checkpoints: allowed >= 1; max_failures: allowed >= 0")
        if not self.cpus_per_worker > 0:
            raise ValueError(f"cpus_per_worker: got {self.cpus_per_worker}; allowed: a number > 0")
        check_custom_resources("resources_per_worker", self.resources_per_worker)
        if self.log_every_n_steps < 0:
            raise ValueError(f"log_every_n_steps: got {self.log_every_n_steps}; allowed: >= 0")
        if self.parallel == "towers" and self.num_workers != 1:
            raise ValueError(
                f"num_workers: got {self.num_workers}; allowed with parallel 'towers': 1 "
                "(use 'hybrid' for towers in each of several workers)"
            )
        if self.parallel == "hybrid" and self.num_workers < 2:
            raise ValueError("num_workers: allowed with parallel 'hybrid': >= 2 (or use 'towers')")

    @property
    def devices_per_worker(self) -> int:
        return 1 if self.parallel == "data" else 2

    @property
    def batch_size_per_worker(self) -> int:
        return self.global_batch_size // self.num_workers


@dataclass(frozen=True)
class WorkerPlan:
    """Everything each training worker needs, handed over once (pickled) by the driver."""

    model: ModelConfig  # num_classes resolved from the data
    optim: OptimizerConfig
    train: TrainConfig
    transform: BatchTransform  # augmentation and normalisation, on the worker's device
    steps_per_epoch: int  # per worker: its equal share of the images, whole batches
    prefetch_batches: int
    shuffle_rows: int  # the training iterator's shuffle buffer, images (data.shuffle_rows)
    pin_memory: bool
    feed: Feed  # how the worker turns its dataset shard into batches (where JPEGs are decoded)
    seed: int
    config_yaml: str  # the run's resolved config, stored in every checkpoint
    classes: tuple[str, ...] = ()  # the data's class names in label order, checked by evaluate
    training_digest: str = ""  # of the fields that define the training (training/identity.py)
    training_fields: dict = field(default_factory=dict)
    run_folder: str = ""  # <storage_path>/<run name>: where a restart looks for checkpoints
    system_metrics: SystemMetricsTarget | None = None  # each node's first worker samples it
    step_metrics: StepMetricsTarget | None = None  # rank 0 logs its live curves into the run
    log_level: int = logging.INFO  # the driver's: rank 0's lines below it are not shown
    progress_bar: bool = False  # a live bar per epoch (the driver's console is a terminal)
    # the prepared data it trains on, kept in every checkpoint: what evaluate scores on
    data: dict[str, str] = field(default_factory=dict)  # {"uri": ..., "key": ...}


class TrainingSections(Protocol):
    """What training reads of an experiment's config: the sections of the components a training
    run is made of (config/experiment.py's ExperimentConfig, a layer above, has them)."""

    name: str | None  # the run's name
    seed: int
    model: ModelConfig
    optim: OptimizerConfig
    data: DataConfig
    train: TrainConfig
