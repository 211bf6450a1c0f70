"""Where a run came from: MLflow's source tags (commit, entry point, user; common/source.py),
the library versions, the cluster's shape and the user's note, as tags every run records when
it starts (`TrackedRun.log_start`)."""

from __future__ import annotations

import sys

from orchestrator.common import source
from orchestrator.common.ray_cluster import cluster_shape
from orchestrator.common.source import command_source

SOURCE_TAGS = (source.COMMIT, source.BRANCH, source.DIRTY, source.NAME, source.TYPE, source.USER)
NOTE = "mlflow.note.content"  # the run's description in MLflow's UI


def provenance_tags(note: str = "") -> dict[str, str]:
    """The command's source, the versions of Python, Ray, torch and MLflow, the cluster's
    shape, and `note` as the run's description."""
    import mlflow
    import ray
    import torch

    return {
        **command_source(),
        "ray_version": ray.__version__,
        "torch_version": torch.__version__,
        "mlflow_version": mlflow.__version__,
        "python_version": sys.version.split()[0],
        **cluster_shape(),
        **({NOTE: note} if note else {}),
    }
