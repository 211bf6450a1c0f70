"""Models in MLflow: a finished run's predictor logged as a pyfunc model (pyfunc_model.py) with
its signature, input example, pinned requirements and the code it runs, registered on request;
and a logged model fetched back (`runs:/`, `models:/`) for serving and batch prediction."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import sys
import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path

import pandas as pd

import workloads
from orchestrator.common.errors import InputError
from orchestrator.common.redact import redact
from orchestrator.tracking.client import failing_fast, reachable_client
from orchestrator.tracking.config import TrackingConfig, redacted
from orchestrator.tracking.reads import registered_version
from workloads.alexnet.predictor import INPUT_COLUMN, Predictor

UPLOAD_TIMEOUT_S = 300
MODEL_NAME = "model"  # the model's name on its run: runs:/<run id>/model
PREDICTOR_ARTIFACT = "predictor"  # the predictor's folder inside the model's artifacts
PYFUNC_MODEL = Path(__file__).with_name("pyfunc_model.py")  # run by MLflow, never imported here
# what the model runs with, pinned at the versions that logged it
REQUIREMENTS = (
    "mlflow",
    "torch",
    "numpy",
    "pandas",
    "pillow",
    "simplejpeg",
    "opencv-python-headless",
)


def log_predictor(
    run_id: str,
    tracking_uri: str,
    folder: Path,
    example: bytes,
    registered_name: str | None,
    metadata: dict,
):
    """The predictor saved in `folder` as run `run_id`'s model "model", registered under
    `registered_name` unless None. Returns MLflow's ModelInfo."""
    import mlflow
    from mlflow.models import infer_signature

    predictor = Predictor.load(folder)
    example_frame = pd.DataFrame({INPUT_COLUMN: [example]})
    labels, probabilities = predictor.top(predictor.image(example)[None])
    output = pd.DataFrame(
        {"labels": labels, "probabilities": [list(map(float, p)) for p in probabilities]}
    )
    with tempfile.TemporaryDirectory() as scratch:
        code = shutil.copytree(
            Path(workloads.__file__).parent,
            Path(scratch) / "workloads",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        mlflow.set_tracking_uri(tracking_uri)  # run URLs stay unprinted (TrackedRun)
        # an outage fails at once (a warning: the checkpoint stays) instead of retrying for
        # minutes; each request may take its time (a full AlexNet is 244 MB)
        with failing_fast(UPLOAD_TIMEOUT_S), mlflow.start_run(run_id=run_id), _quiet_mlflow():
            return mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(PYFUNC_MODEL),
                artifacts={PREDICTOR_ARTIFACT: str(folder)},
                code_paths=[str(code)],
                signature=infer_signature(example_frame, output),
                input_example=example_frame,
                pip_requirements=[f"{name}=={version(name)}" for name in REQUIREMENTS],
                registered_model_name=registered_name,
                metadata=redact(metadata),
                # the Models tab's columns: where it came from, what it was trained on
                tags=redact({key: str(value) for key, value in metadata.items()}),
                step=int(metadata.get("epoch", 0)),
            )


@contextlib.contextmanager
def _quiet_mlflow():
    """Without MLflow's INFO lines ("Validating input example ...", "Created version ...": the
    caller says where the model went) and its advice to add type hints (the signature is given);
    what it wrote to stderr is shown when it fails."""
    logger = logging.getLogger("mlflow")
    level, printed = logger.level, io.StringIO()
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(printed):
            warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method")
            yield
    except BaseException:
        sys.stderr.write(printed.getvalue())
        raise
    finally:
        logger.setLevel(level)


def download_predictor(config: TrackingConfig, uri: str, into: Path) -> tuple[Path | None, dict]:
    """(the predictor folder of the model behind `uri`, downloaded under `into`, or None when
    the run or version logged no such model (only a checkpoint); where it came from: its run id
    and registered version). `uri`: `runs:/<run id>` (that run's model), `models:/<name>@<alias>`
    or `models:/<name>/<version>`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client, tracking_uri = reachable_client(config, InputError, f"--model {uri}")
    if uri.startswith("runs:/"):
        run_id = uri.removeprefix("runs:/").strip("/").split("/")[0]
        model_uri, facts = f"runs:/{run_id}/{MODEL_NAME}", {"run_id": run_id}
    else:
        try:
            version = registered_version(client, uri)
        except MlflowException as error:
            raise InputError(
                f"--model: {uri} is not in the MLflow store at {redacted(tracking_uri)} "
                f"({error.error_code}); allowed: runs:/<run id>, models:/<name>@<alias> or "
                "models:/<name>/<version>"
            ) from None
        model_uri = f"models:/{version.name}/{version.version}"
        facts = {"name": version.name, "version": version.version, "run_id": version.run_id}
    mlflow.set_tracking_uri(tracking_uri)
    try:
        folder = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{model_uri}/artifacts/{PREDICTOR_ARTIFACT}", dst_path=str(into)
        )
    except (OSError, MlflowException) as error:  # no model, or one without a predictor
        if isinstance(error, MlflowException) and error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None, facts
    return Path(folder), facts
