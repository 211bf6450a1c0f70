"""`evaluate`: top-1/top-5 error of a checkpoint on its prepared validation split, centre crop
or ten-crop, logged to MLflow."""

from __future__ import annotations

from orchestrator import data as data_pipeline
from orchestrator import tracking, tracking_reads
from orchestrator.commands import add_overrides
from orchestrator.config import ExperimentConfig, load_config, load_config_text
from orchestrator.errors import InputError


def add_arguments(parser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="a checkpoint folder or checkpoint.pt written by train, runs:/<MLflow run id> for "
        "that run's last checkpoint, or models:/<name>@<alias> for a model a sweep registered; "
        "its config comes with it",
    )
    parser.add_argument("--ten-crop", action="store_true", help="also the paper's ten-crop test")
    add_overrides(parser)


def run(args) -> None:
    evaluate(args.model, args.ten_crop, args.overrides)  # the config comes with the checkpoint


def _check_classes(state: dict, config: ExperimentConfig, data, model_uri: str) -> None:
    """The validation data's labels must mean what the checkpoint's outputs mean."""
    trained = list(state.get("classes") or [])  # empty for checkpoints from before it was kept
    if trained and trained != data.classes:
        if sorted(trained) == sorted(data.classes):
            problem = "the same classes in another order"
        else:
            missing = sorted(set(trained) ^ set(data.classes))
            problem = f"other classes ({len(data.classes)}; differing: {', '.join(missing[:5])})"
        raise InputError(
            f"data.root: {data.uri} has {problem} than the checkpoint {model_uri} was trained "
            f"on ({len(trained)} classes); evaluate it on data prepared from the same class list"
        )
    if config.model.num_classes not in (None, len(data.classes)):
        raise InputError(
            f"data.root: {data.uri} has {len(data.classes)} classes; the checkpoint {model_uri} "
            f"predicts {config.model.num_classes}"
        )


def evaluate(model_uri: str, ten_crop: bool, overrides: list[str]) -> dict[str, float]:
    """Top-1/top-5 error of a checkpoint on its prepared validation split, logged to MLflow.

    `model_uri`: a checkpoint folder or file written by `train`, `runs:/<MLflow run id>` (that
    run's last checkpoint), or a model a sweep registered (`models:/<name>@<alias>` or
    `models:/<name>/<version>`: the checkpoint it was made from). The run's own config comes
    with the checkpoint; `--set` overrides it (e.g. `data.root` for another prepared dataset).
    """
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
    metrics, count = _score(state, config, data, ten_crop)
    print(f"evaluated {model_uri} (epoch {state['epoch']}) on {count} validation images of "
          f"{data.uri}:")  # fmt: skip
    for key, value in metrics.items():
        print(f"  {key:<24} {value:.4f}")

    run = tracking.TrackedRun(config.tracking, f"evaluate-{config.name or 'checkpoint'}")
    run.log_start(
        params={
            "model": model_uri,
            "epoch": state["epoch"],
            "data.prepared_uri": data.uri,
            "images": count,
            "ten_crop": ten_crop,
        },  # fmt: skip
        tags={**tracking.provenance_tags(), "kind": "evaluate"},
        config_yaml=state["config"],
    )
    run.log_dataset(data, "eval")
    run.log_metrics(metrics)
    run.finish("FINISHED")
    return metrics


def _score(state: dict, config: ExperimentConfig, data, ten_crop: bool) -> tuple[dict, int]:
    """(error rates, images) of the checkpoint's weights on the data's validation split: the
    training loop's evaluation routine and precision rule."""
    import torch

    from orchestrator import launch
    from workloads.alexnet import engine
    from workloads.alexnet.model import build_model

    model = build_model(config.model)
    model.load_state_dict(state["model"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    stream = data_pipeline.decoded_stream(data, "val", config.data, seed=None)
    batches = ((batch["image"], batch["label"])
               for batch in stream.iter_torch_batches(batch_size=64, device=device))  # fmt: skip
    transform = launch.batch_transform(config.data, data, config.model.input_size,
                                              config.seed)  # fmt: skip
    precision = engine.autocast_dtype_for(device, config.train.precision)
    center, views = engine.evaluate(model, batches, transform, precision, ten_crop)
    if center is None:
        raise InputError(f"data.root: {data.uri} has no validation images to evaluate on")
    metrics = engine.error_rates(center)
    if views is not None:
        metrics.update(engine.error_rates(views, "_10crop"))
    return metrics, int(center["count"].item())
