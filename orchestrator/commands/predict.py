"""`predict`: a trained model's top-k for every image of a folder or bucket (subfolders too), or
of a prepared dataset's split, with Ray Data, into a Parquet table (and a CSV); unreadable files
listed in rejects.csv."""

from __future__ import annotations

from orchestrator.commands import add_config, add_overrides, load
from orchestrator.commands.serve import MODEL_HELP


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument(
        "--input",
        required=True,
        help="a folder or bucket of images (subfolders too); with --split, a prepared dataset",
    )
    parser.add_argument(
        "--split", help="predict this split (train, val) of the prepared dataset --input names"
    )
    parser.add_argument(
        "--out",
        required=True,
        help="a folder (path or URI) for predictions.parquet, rejects.csv (and predictions.csv)",
    )
    parser.add_argument("--csv", action="store_true", help="also write predictions.csv")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the predictions already in --out"
    )
    add_config(parser, None)  # the predict, inference and tracking sections
    add_overrides(parser)


def run(args) -> None:
    from orchestrator.common.redact import redact_text
    from orchestrator.data.prepared import open_prepared
    from orchestrator.serving.batch import PREDICTIONS, REJECTS, predict_folder, predict_split
    from orchestrator.serving.model import open_model

    config = load(args)
    model = open_model(args.model, config.inference, args.overrides)
    if args.split:
        data = open_prepared(args.input)
        done = predict_split(
            model, data, args.split, args.out, config.predict, config.data, args.csv, args.overwrite
        )
    else:
        done = predict_folder(model, args.input, args.out, config.predict, args.csv, args.overwrite)
    print(
        f"predicted {done.images:,} images of {redact_text(args.input)} with "
        f"{redact_text(model.uri)} in {done.seconds:.1f} s ({done.images_per_second:.0f} "
        f"images/s): {redact_text(done.out)}/{PREDICTIONS}; {done.rejected:,} unreadable files "
        f"in {REJECTS}"
    )
