"""`evaluate`: top-1/top-5 error of a checkpoint on its prepared validation split, centre crop
or ten-crop, logged to MLflow."""

from __future__ import annotations

from orchestrator.commands import add_model, add_overrides


def add_arguments(parser) -> None:
    add_model(parser)
    parser.add_argument("--ten-crop", action="store_true", help="also the paper's ten-crop test")
    add_overrides(parser)


def run(args) -> None:
    evaluate(args.model, args.ten_crop, args.overrides)  # the config comes with the checkpoint


def evaluate(model_uri: str, ten_crop: bool, overrides: list[str]) -> dict[str, float]:
    """Top-1/top-5 error of a checkpoint on its prepared validation split, logged to MLflow.

    `model_uri`: see analysis/trained.py. The run's own config comes with the checkpoint;
    `--set` overrides it (e.g. `data.root` for another prepared dataset).
    """
    from orchestrator.analysis.evaluate import validation_errors
    from orchestrator.analysis.trained import open_trained
    from orchestrator.common.redact import redact_text
    from orchestrator.tracking.run import TrackedRun

    trained = open_trained(model_uri, overrides)
    config, data, state = trained.config, trained.data, trained.state
    metrics, count = validation_errors(trained, ten_crop)
    print(
        f"evaluated {redact_text(trained.uri)} (epoch {trained.epoch}) on {count} validation "
        f"images of {redact_text(data.uri)}:"
    )
    for key, value in metrics.items():
        print(f"  {key:<24} {value:.4f}")

    run = TrackedRun(config.tracking, f"evaluate-{config.name or 'checkpoint'}")
    params = {
        "model": trained.uri,
        "epoch": trained.epoch,
        "data.prepared_uri": data.uri,
        "images": count,
        "ten_crop": ten_crop,
    }
    run.log_start("evaluate", params, config_yaml=state["config"])
    run.log_dataset(data, "eval")
    run.log_metrics(metrics)
    run.finish("FINISHED")
    return metrics
