"""A trained model as users name one (`--model`): a checkpoint folder or file written by `train`,
`runs:/<MLflow run id>` (that run's last checkpoint) or a model a sweep registered
(`models:/<name>@<alias>`, `models:/<name>/<version>`: the checkpoint it was made from), opened
with its own config and the prepared data it is scored on. `evaluate`, `figures`, `neighbors`
and the sweep's best model start here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from orchestrator.common.errors import InputError
from orchestrator.common.redact import redact_text
from orchestrator.config.experiment import ExperimentConfig, load_config, load_config_text
from orchestrator.data.config import DataConfig
from orchestrator.data.prepared import PreparedData, open_prepared
from orchestrator.data.sources import open_data
from orchestrator.tracking.config import TrackingConfig
from orchestrator.tracking.reads import checkpoint_of_run
from orchestrator.training.checkpoints import read_checkpoint
from orchestrator.training.transform import batch_transform
from workloads.alexnet.config import ModelConfig
from workloads.alexnet.model import build_model
from workloads.alexnet.transforms import BatchTransform


def load_model(model_config: ModelConfig, weights: dict) -> torch.nn.Module:
    """The AlexNet of `model_config` with `weights` (single-device layout), on the CPU, in eval
    mode."""
    model = build_model(model_config)
    model.load_state_dict(weights)
    return model.eval()


def evaluation_device() -> torch.device:
    """Where a trained model is evaluated in this process: the GPU if there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class Trained:
    uri: str  # the checkpoint (a path or URI)
    state: dict  # what `checkpoints.read_checkpoint` returns: weights, config, epoch, classes
    config: ExperimentConfig  # the checkpoint's config with the user's overrides
    data: PreparedData  # the prepared data its config (or --set data.root) names

    @classmethod
    def of(cls, uri: str, state: dict, data: PreparedData, overrides: list[str] = ()) -> Trained:
        """A checkpoint's state with its config read back (and `overrides` applied)."""
        return cls(uri, state, checkpoint_config(state, uri, overrides), data)

    @property
    def epoch(self) -> int:
        return int(self.state["epoch"])

    def model(self) -> torch.nn.Module:
        """The AlexNet with the checkpoint's weights, on the CPU, in eval mode."""
        return load_model(self.config.model, self.state["model"])

    def transform(self) -> BatchTransform:
        """The run's evaluation views: centre crop (and ten crops) minus its data's mean image."""
        config = self.config
        return batch_transform(config.data, self.data, config.model.input_size, config.seed)


def checkpoint_config(state: dict, uri: str, overrides: list[str] = ()) -> ExperimentConfig:
    """The config a checkpoint was trained with (kept inside it), with `overrides`."""
    return load_config_text(
        state["config"], overrides, source=f"{uri or 'a checkpoint'} (its config)"
    )


def open_trained(model_uri: str, overrides: list[str]) -> Trained:
    """The checkpoint behind `model_uri`, its config (with `--set` overrides) and the prepared
    data it was trained on, as the checkpoint names it (its key must still match), or the data
    `--set data.source/root` points at instead; their classes must be the checkpoint's. Nothing
    is prepared unless `--set` names a raw source. Starts Ray."""
    if model_uri.startswith(("runs:/", "models:/")):
        model_uri = checkpoint_of_run(load_config(None, overrides).tracking, model_uri)
    state = read_checkpoint(model_uri)
    config = checkpoint_config(state, model_uri, overrides)
    recorded = state.get("data") or {}
    chosen = any(
        o.startswith(("data.root=", "data.source=", "data.prepared_root=")) for o in overrides
    )
    data_config = config.data
    if not chosen:
        data_config = _recorded_data(config, recorded, model_uri)

    def check(data):  # before Ray starts, where the data is prepared already
        if not chosen and recorded.get("key") not in (None, data.key):
            raise InputError(
                f"data.root: the prepared data at {redact_text(data.uri)} is not what "
                f"{redact_text(model_uri)} was trained on (its key was {recorded['key']}, it is "
                f"{data.key} now); point --set data.root at the data it was trained on"
            )
        _check_classes(state, config, data, model_uri)

    data = open_data(data_config, config.prepare, check=check)
    return Trained(uri=model_uri, state=state, config=config, data=data)


def trained_of_run(tracking: TrackingConfig, run_id: str) -> Trained:
    """The last checkpoint of the MLflow run `run_id` (a trial's) in `tracking`'s store, with
    its config and the prepared data its config names."""
    checkpoint = checkpoint_of_run(tracking, f"runs:/{run_id}")
    state = read_checkpoint(checkpoint)
    config = checkpoint_config(state, checkpoint)
    return Trained(checkpoint, state, config, open_prepared(config.data.root))


def _recorded_data(config: ExperimentConfig, recorded: dict, model_uri: str) -> DataConfig:
    """Where the checkpoint's prepared data is: named in it, or its config's prepared source."""
    if recorded.get("uri") and "***" not in recorded["uri"]:
        return dataclasses.replace(config.data, source="prepared", root=recorded["uri"])
    if config.data.source == "prepared":
        return config.data
    raise InputError(
        f"--model: {redact_text(model_uri)} was trained on data prepared from the "
        f"{config.data.source} source {redact_text(config.data.root or '')}, and does not name "
        "the prepared folder (it was written before checkpoints kept it, or its URI holds a "
        "secret); pass --set data.source=prepared --set data.root=<that folder>"
    )


def _check_classes(state: dict, config: ExperimentConfig, data, model_uri: str) -> None:
    """The data's labels must mean what the checkpoint's outputs mean."""
    trained = list(state.get("classes") or [])  # empty for checkpoints from before it was kept
    if trained and trained != data.classes:
        if sorted(trained) == sorted(data.classes):
            problem = "the same classes in another order"
        else:
            missing = sorted(set(trained) ^ set(data.classes))
            problem = f"other classes ({len(data.classes)}; differing: {', '.join(missing[:5])})"
        raise InputError(
            f"data.root: {data.uri} has {problem} than the checkpoint {model_uri} was trained "
            f"on ({len(trained)} classes); use it on data prepared from the same class list"
        )
    if config.model.num_classes not in (None, len(data.classes)):
        raise InputError(
            f"data.root: {data.uri} has {len(data.classes)} classes; the checkpoint {model_uri} "
            f"predicts {config.model.num_classes}"
        )
