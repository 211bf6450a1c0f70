"""A trained model as users name one (`--model`): a checkpoint folder or file written by `train`,
`runs:/<MLflow run id>` (that run's last checkpoint) or a model a sweep registered
(`models:/<name>@<alias>`, `models:/<name>/<version>`: the checkpoint it was made from), opened
with its own config and the prepared data it is scored on. `evaluate`, `figures` and `neighbors`
start here."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator import data as data_pipeline
from orchestrator import tracking_reads
from orchestrator.config import ExperimentConfig, load_config, load_config_text
from orchestrator.errors import InputError

MODEL_HELP = (
    "a checkpoint folder or checkpoint.pt written by train, runs:/<MLflow run id> for that run's "
    "last checkpoint, or models:/<name>@<alias> for a model a sweep registered; its config comes "
    "with it"
)


@dataclass(frozen=True)
class Trained:
    uri: str  # the checkpoint (a path or URI)
    state: dict  # what `checkpoints.read_checkpoint` returns: weights, config, epoch, classes
    config: ExperimentConfig  # the checkpoint's config with the user's overrides
    data: data_pipeline.PreparedData  # the prepared data its config (or --set data.root) names

    @property
    def epoch(self) -> int:
        return int(self.state["epoch"])

    def model(self):
        """The AlexNet with the checkpoint's weights, on the CPU, in eval mode."""
        from workloads.alexnet.model import build_model

        model = build_model(self.config.model)
        model.load_state_dict(self.state["model"])
        return model.eval()

    def transform(self):
        """The run's evaluation views: centre crop (and ten crops) minus its data's mean image."""
        from orchestrator import launch

        return launch.batch_transform(
            self.config.data, self.data, self.config.model.input_size, self.config.seed
        )


def open_trained(model_uri: str, overrides: list[str]) -> Trained:
    """The checkpoint behind `model_uri`, its config (with `--set` overrides, e.g. `data.root`
    for another prepared dataset) and its data, whose classes must be the checkpoint's. Starts
    Ray (to prepare a raw source, as `train` does)."""
    from orchestrator.checkpoints import read_checkpoint

    if model_uri.startswith(("runs:/", "models:/")):
        model_uri = tracking_reads.checkpoint_of_run(
            load_config(None, overrides).tracking, model_uri
        )
    state = read_checkpoint(model_uri)
    config = load_config_text(state["config"], overrides, source=f"{model_uri} (its config)")

    def check(data):  # before Ray starts, where the data is prepared already
        _check_classes(state, config, data, model_uri)

    data = data_pipeline.open_data(config.data, config.prepare, check=check)
    return Trained(uri=model_uri, state=state, config=config, data=data)


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
