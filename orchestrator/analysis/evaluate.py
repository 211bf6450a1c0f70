"""A trained model's top-1/top-5 error on its data's validation split, centre crop and (on
request) the paper's ten-crop test, with the training loop's evaluation routine and precision
rule."""

from __future__ import annotations

from orchestrator.analysis.trained import Trained, evaluation_device
from orchestrator.common.errors import InputError
from orchestrator.data.streams import decoded_stream
from orchestrator.tracking.metrics import with_ten_crop_names
from workloads.alexnet import engine

BATCH = 64  # images per forward pass


def validation_errors(trained: Trained, ten_crop: bool) -> tuple[dict[str, float], int]:
    """(error rates by metric name, images scored) of the checkpoint's weights on the data's
    validation split."""
    config, data = trained.config, trained.data
    device = evaluation_device()
    model = trained.model().to(device)
    stream = decoded_stream(data, "val", config.data, seed=None)
    batches = (
        (batch["image"], batch["label"])
        for batch in stream.iter_torch_batches(batch_size=BATCH, device=device)
    )
    precision = engine.autocast_dtype_for(device, config.train.precision)
    center, views = engine.evaluate(model, batches, trained.transform(), precision, ten_crop)
    if center is None:
        raise InputError(f"data.root: {data.uri} has no validation images to evaluate on")
    metrics = engine.error_rates(center)
    if views is not None:
        metrics.update(with_ten_crop_names(engine.error_rates(views)))
    return metrics, int(center["count"].item())
