"""`serve`: a trained model as an HTTP service on Ray Serve (POST /predict an image, GET
/healthz), on the current Ray cluster, until Ctrl-C."""

from __future__ import annotations

from orchestrator.commands import add_config, add_overrides, load

MODEL_HELP = (
    "models:/<name>@<alias> or models:/<name>/<version> (a registered model), runs:/<run id> "
    "(the model that run logged), an MLflow model or predictor folder, or a checkpoint written "
    "by train"
)


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    add_config(parser, None)  # the serve, inference and tracking sections
    add_overrides(parser)


def run(args) -> None:
    from orchestrator.serving.model import open_model
    from orchestrator.serving.service import serve_until_interrupted

    config = load(args)
    model = open_model(args.model, config.inference, args.overrides)
    serve_until_interrupted(model, config.serve)
