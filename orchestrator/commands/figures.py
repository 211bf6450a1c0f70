"""`figures`: the paper's figures for a checkpoint or a registered model, as files (a training
run logs the same into its MLflow run): conv1's kernels, top-5 predictions, fc7 nearest
neighbours and the confusion matrix (analysis/figures.py)."""

from __future__ import annotations

from pathlib import Path

from orchestrator.commands import add_model, add_overrides


def add_arguments(parser) -> None:
    add_model(parser)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("figures"),
        help="folder for the PNG files (default: ./figures)",
    )
    add_overrides(parser)


def run(args) -> None:
    write(args.model, args.out, args.overrides)


def write(model_uri: str, out: Path, overrides: list[str]):
    """The figures of `model_uri` (see analysis/trained.py) into `out`; returns them."""
    from orchestrator.analysis import figures
    from orchestrator.analysis.scoring import scoring_for
    from orchestrator.analysis.trained import open_trained
    from orchestrator.common.redact import redact_text

    trained = open_trained(model_uri, overrides)
    made = figures.make_figures(scoring_for(trained), trained.epoch)
    where, data = redact_text(trained.uri), redact_text(trained.data.uri)
    print(f"figures of {where} (epoch {trained.epoch}) on {data}:")
    for path in figures.write_figures(made, out):
        print(f"  {path}")
    return made
