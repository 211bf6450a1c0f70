"""A trained model made to leave the lab: the predictor of a checkpoint (encoded images in, top-k
class names out: what every finished run logs to MLflow, `serve` and `predict` load), and the
model as one file for other runtimes: ONNX (checked with ONNX Runtime) or torch.export's pt2."""

from __future__ import annotations

import dataclasses
import io
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from orchestrator.analysis.trained import Trained
from orchestrator.common.errors import InputError
from orchestrator.common.redact import redact_exception
from orchestrator.tracking import tags
from orchestrator.tracking.models import MODEL_NAME
from orchestrator.tracking.run import TrackedRun
from workloads.alexnet.export import Classifier
from workloads.alexnet.predictor import Predictor, PredictorSpec

FORMATS = ("onnx", "pt2")
ONNX_TOLERANCE = 1e-4  # ONNX Runtime's logits against torch's, absolute
ONNX_CHECK_IMAGES = 16


def predictor_of(trained: Trained, top_k: int = 5) -> Predictor:
    """The checkpoint's model with its evaluation view, its classes and where it came from."""
    config, data = trained.config, trained.data
    model = dataclasses.replace(config.model, num_classes=len(data.classes))
    facts = {
        "checkpoint": trained.uri,
        "epoch": trained.epoch,
        "dataset_digest": data.digest,
        "dataset": data.name,
    }
    spec = PredictorSpec(
        model=model,
        prepared_size=data.image_size,
        classes=tuple(data.classes),
        top_k=min(top_k, len(data.classes)),
        facts=facts,
    )
    return Predictor(spec, trained.state["model"], config.data.mean_image(data.stats))


def example_image(predictor: Predictor) -> bytes:
    """A PNG of the training set's mean image (grey without one): the model's input example."""
    size = predictor.spec.prepared_size
    mean = (
        predictor.mean_image
        if predictor.mean_image is not None
        else np.full((size,) * 2 + (3,), 0.5)
    )
    pixels = np.round(np.asarray(mean) * 255).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Registration:
    """Where a logged model goes in the registry: `name@alias` moves to its new version only when
    the version beats the alias's holder by `metric` (an error) on the same validation data."""

    name: str
    alias: str
    metric: str
    score: float  # the model's `metric`
    version_tags: dict = dataclasses.field(default_factory=dict)  # beside checkpoint and digest


def log_trained_model(
    run: TrackedRun,
    trained: Trained,
    registration: Registration | None,
    metadata: dict,
    title: str = "",
) -> str | None:
    """The checkpoint's predictor as `run`'s MLflow model, registered when `registration` says
    so. Returns the line that says where it went, or None when it could not be logged: a failure
    costs a warning, never the run (the checkpoint stays; `export` and `serve` read it too)."""
    if not run.tracked:
        return None
    predictor = predictor_of(trained)
    name = registration.name if registration else None
    try:
        with tempfile.TemporaryDirectory() as scratch:
            folder = predictor.save(Path(scratch) / "predictor")
            info = run.log_predictor(
                folder, example_image(predictor), name, {**predictor.spec.facts, **metadata}
            )
    except Exception as error:  # noqa: BLE001
        warnings.warn(f"model: not logged ({redact_exception(error, 300)})", stacklevel=2)
        return None
    where = f"runs:/{run.run_id}/{MODEL_NAME}"
    message = f"{title or f'model (epoch {trained.epoch})'}: {where}"
    if registration is not None:
        version = info.registered_model_version
        version_tags = {
            **registration.version_tags,
            tags.CHECKPOINT: trained.uri,
            tags.DATASET_DIGEST: trained.data.digest,
            registration.metric: registration.score,
        }
        why = run.promote(name, registration.alias, version, version_tags, registration.metric)
        if why is None:
            message += f", registered as models:/{name}@{registration.alias} (version {version})"
        else:
            message += f", registered as models:/{name}/{version}; {why}"
    return message


@dataclass(frozen=True)
class Exported:
    path: Path
    input_size: int  # the exported graph takes uint8 (N, input_size, input_size, 3)
    max_difference: float | None  # ONNX Runtime against torch on the check images; pt2: None


def export(predictor: Predictor, kind: str, out: Path) -> Exported:
    """The model as one file: uint8 images (N, S, S, 3) at the prepared size -> logits, the
    centre crop and the mean image inside (`Classifier`), the batch size free."""
    if kind not in FORMATS:
        raise InputError(f"--format: got {kind!r}; allowed: {', '.join(FORMATS)}")
    size = predictor.spec.prepared_size
    classifier = Classifier(
        predictor.model.cpu(), predictor.spec.model.input_size, predictor.mean_image
    )
    classifier.eval()
    images = check_images(size, ONNX_CHECK_IMAGES)
    batch = torch.export.Dim("batch", min=1, max=4096)
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == "pt2":
        program = torch.export.export(classifier, (images,), dynamic_shapes=({0: batch},))
        torch.export.save(program, out)
        return Exported(out, size, None)
    torch.onnx.export(
        classifier,
        (images,),
        str(out),
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        dynamo=True,
        external_data=False,  # one file, the weights inside
        verbose=False,
    )
    return Exported(out, size, onnx_difference(classifier, out, images))


def check_images(size: int, count: int) -> torch.Tensor:
    """`count` uint8 images (N, S, S, 3) of fixed random pixels."""
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8))


def onnx_difference(classifier: torch.nn.Module, path: Path, images: torch.Tensor) -> float:
    """The largest absolute difference between ONNX Runtime's logits and torch's on `images`;
    raises when it is over `ONNX_TOLERANCE`."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"images": images.numpy()})
    with torch.no_grad():
        expected = classifier(images).numpy()
    difference = float(np.abs(logits - expected).max())
    if not difference <= ONNX_TOLERANCE:
        raise RuntimeError(
            f"{path}: ONNX Runtime's logits differ from torch's by {difference:.2e} "
            f"(allowed: {ONNX_TOLERANCE:g})"
        )
    return difference
