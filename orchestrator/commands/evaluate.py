"""`evaluate`: top-1/top-5 error of a checkpoint on its prepared validation split, centre crop
or ten-crop, logged to MLflow."""

from __future__ import annotations

from orchestrator import data as data_pipeline
from orchestrator import tracking
from orchestrator.commands import add_overrides
from orchestrator.errors import InputError
from orchestrator.trained import MODEL_HELP, Trained, open_trained


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--ten-crop", action="store_true", help="also the paper's ten-crop test")
    add_overrides(parser)


def run(args) -> None:
    evaluate(args.model, args.ten_crop, args.overrides)  # the config comes with the checkpoint


def evaluate(model_uri: str, ten_crop: bool, overrides: list[str]) -> dict[str, float]:
    """Top-1/top-5 error of a checkpoint on its prepared validation split, logged to MLflow.

    `model_uri`: see `orchestrator/trained.py`. The run's own config comes with the checkpoint;
    `--set` overrides it (e.g. `data.root` for another prepared dataset).
    """
    trained = open_trained(model_uri, overrides)
    config, data, state = trained.config, trained.data, trained.state
    metrics, count = _score(trained, ten_crop)
    print(
        f"evaluated {trained.uri} (epoch {trained.epoch}) on {count} validation images of "
        f"{data.uri}:"
    )
    for key, value in metrics.items():
        print(f"  {key:<24} {value:.4f}")

    run = tracking.TrackedRun(config.tracking, f"evaluate-{config.name or 'checkpoint'}")
    run.log_start(
        params={
            "model": trained.uri,
            "epoch": trained.epoch,
            "data.prepared_uri": data.uri,
            "images": count,
            "ten_crop": ten_crop,
        },
        tags={**tracking.provenance_tags(), "kind": "evaluate"},
        config_yaml=state["config"],
    )
    run.log_dataset(data, "eval")
    run.log_metrics(metrics)
    run.finish("FINISHED")
    return metrics


def _score(trained: Trained, ten_crop: bool) -> tuple[dict, int]:
    """(error rates, images) of the checkpoint's weights on the data's validation split: the
    training loop's evaluation routine and precision rule."""
    import torch

    from workloads.alexnet import engine

    config, data = trained.config, trained.data
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = trained.model().to(device)
    stream = data_pipeline.decoded_stream(data, "val", config.data, seed=None)
    batches = (
        (batch["image"], batch["label"])
        for batch in stream.iter_torch_batches(batch_size=64, device=device)
    )
    transform = trained.transform()
    precision = engine.autocast_dtype_for(device, config.train.precision)
    center, views = engine.evaluate(model, batches, transform, precision, ten_crop)
    if center is None:
        raise InputError(f"data.root: {data.uri} has no validation images to evaluate on")
    metrics = engine.error_rates(center)
    if views is not None:
        metrics.update(engine.error_rates(views, "_10crop"))
    return metrics, int(center["count"].item())
