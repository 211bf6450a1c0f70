"""The experiment config: every section composed into one `ExperimentConfig`, read from YAML
(with a `base` and `--set a.b=value` overrides) and validated before any cluster work.

Each component owns its section (`ModelConfig` beside the model, `DataConfig` beside the data
code, ...); this module only composes them and checks what involves two sections at once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.common import yaml_config
from orchestrator.config.serve import InferenceConfig, PredictConfig, ServeConfig
from orchestrator.config.study import StudyConfig
from orchestrator.config.sweep import SweepConfig
from orchestrator.data.config import DataConfig
from orchestrator.data.prepare import PrepareConfig
from orchestrator.tracking.config import TrackingConfig
from orchestrator.training.config import TrainConfig
from workloads.alexnet.config import ModelConfig, OptimizerConfig

# The sections that only their own commands read: a training run's params leave them out
COMMAND_SECTIONS = ("sweep", "study", "inference", "serve", "predict")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one run needs. Defaults are the paper's recipe at full scale."""

    name: str | None = None  # run name; None: "<tracking.experiment>-<date>-<time>-<4 hex>"
    seed: int = 0  # weights, augmentation and shuffling: the same seed, the same run
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    optim: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)  # used by the sweep command only
    study: StudyConfig = field(default_factory=StudyConfig)  # used by the study command only
    inference: InferenceConfig = field(default_factory=InferenceConfig)  # serve and predict
    serve: ServeConfig = field(default_factory=ServeConfig)  # used by the serve command only
    predict: PredictConfig = field(default_factory=PredictConfig)  # the predict command only

    def __post_init__(self):
        if self.data.source != "prepared" and self.prepare.image_size < self.model.input_size:
            raise ValueError(
                f"prepare.image_size: got {self.prepare.image_size}; allowed: >= model.input_size "
                f"({self.model.input_size}), the crop is cut from the {self.prepare.image_size} px "
                "image"
            )
        if self.train.parallel != "data" and self.model.resolved().towers != 2:
            raise ValueError(
                f"train.parallel: got {self.train.parallel!r}, which splits the net's two towers; "
                f"model.towers is {self.model.resolved().towers}: allowed with it: 'data'"
            )
        if self.train.global_batch_size % self.train.num_workers:
            raise ValueError(
                f"train.global_batch_size: got {self.train.global_batch_size}; allowed: a multiple "
                f"of train.num_workers ({self.train.num_workers})"
            )


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> ExperimentConfig:
    """Read a YAML config (or the built-in defaults when `path` is None) and apply overrides.

    A config file may name another as its `base` (a path relative to it): the file then holds
    only what differs; mappings merge key by key, any other value replaces the base's.
    """
    return yaml_config.load(ExperimentConfig, path, overrides)


def load_config_text(
    text: str, overrides: list[str] = (), source: str = "config"
) -> ExperimentConfig:
    """A YAML config given as text (e.g. the one stored in a checkpoint), plus overrides."""
    return yaml_config.load_text(ExperimentConfig, text, overrides, source)


def training_params(config: ExperimentConfig) -> dict[str, Any]:
    """A training run's MLflow params: every field of the sections that define and run it (the
    model with its resolved geometry), none of the sweep's or the study's."""
    fields = yaml_config.flatten(dataclasses.replace(config, model=config.model.resolved()))
    return {k: v for k, v in fields.items() if k.split(".", 1)[0] not in COMMAND_SECTIONS}
