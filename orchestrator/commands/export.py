"""`export`: a trained model as one file for other runtimes: ONNX (checked against torch with
ONNX Runtime) or torch.export's pt2; uint8 images at the prepared size in, logits out."""

from __future__ import annotations

from pathlib import Path

from orchestrator.commands import add_overrides
from orchestrator.commands.serve import MODEL_HELP


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--format", required=True, choices=("onnx", "pt2"), dest="kind")
    parser.add_argument("--out", required=True, type=Path, help="the file to write")
    add_overrides(parser)


def run(args) -> None:
    from orchestrator.analysis.export import ONNX_CHECK_IMAGES, export
    from orchestrator.config.experiment import load_config
    from orchestrator.serving.model import open_model

    model = open_model(args.model, load_config(None, args.overrides).inference, args.overrides)
    exported = export(model.predictor, args.kind, args.out)
    size, classes = exported.input_size, len(model.predictor.spec.classes)
    print(
        f"{args.out}: {args.kind}, uint8 images (N, {size}, {size}, 3) -> logits (N, {classes}), "
        f"{args.out.stat().st_size / 2**20:.1f} MiB"
    )
    if exported.max_difference is not None:
        print(
            f"ONNX Runtime's logits equal torch's on {ONNX_CHECK_IMAGES} images within "
            f"{exported.max_difference:.1e}"
        )
