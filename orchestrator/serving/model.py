"""The predictor behind a `--model` a user names: `models:/<name>@<alias>` or
`models:/<name>/<version>` (a registered model), `runs:/<run id>` (the model that run logged),
an MLflow model folder, a predictor folder, or a checkpoint written by `train` (its predictor
made on the spot, from the prepared data it names). A run or version that logged no model (one
from before runs logged models) falls back to its checkpoint."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from orchestrator.analysis.export import predictor_of
from orchestrator.analysis.trained import open_trained
from orchestrator.config.experiment import load_config
from orchestrator.config.serve import InferenceConfig
from orchestrator.tracking.models import PREDICTOR_ARTIFACT, download_predictor
from workloads.alexnet.predictor import CONFIG_FILE, Predictor


@dataclass(frozen=True)
class OpenedModel:
    uri: str  # as the user named it
    predictor: Predictor  # with the `inference` section's top_k, ten_crop and pixel limit
    registry: dict  # its run id, and registered name and version (for models:/ URIs)

    @property
    def facts(self) -> dict:
        """What a response says of the model: its URI, and where it came from."""
        return {"uri": self.uri, **self.registry, **self.predictor.spec.facts}


def open_model(
    model_uri: str, inference: InferenceConfig, overrides: list[str] = ()
) -> OpenedModel:
    """The predictor of `model_uri`, on the CPU (`Predictor.replace` moves nothing: callers
    choose the device)."""
    predictor, registry = _predictor(model_uri, overrides)
    predictor = predictor.replace(
        top_k=min(inference.top_k, len(predictor.spec.classes)),
        ten_crop=inference.ten_crop,
        max_pixels=inference.max_image_pixels,
    )
    return OpenedModel(model_uri, predictor, registry)


def _predictor(model_uri: str, overrides: list[str]) -> tuple[Predictor, dict]:
    local = Path(model_uri)
    for folder in (local, local / "artifacts" / PREDICTOR_ARTIFACT):
        if (folder / CONFIG_FILE).is_file():
            return Predictor.load(folder), {}
    registry = {}
    if model_uri.startswith(("runs:/", "models:/")):
        tracking = load_config(None, overrides).tracking
        with tempfile.TemporaryDirectory() as scratch:
            folder, registry = download_predictor(tracking, model_uri, Path(scratch))
            if folder is not None:
                return Predictor.load(folder), registry
    return predictor_of(open_trained(model_uri, overrides)), registry
