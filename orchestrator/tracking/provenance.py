"""Where a run came from: the code's git commit, the library versions, and the cluster's shape,
as tags every run records when it starts (`TrackedRun.log_start`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from orchestrator.common.ray_cluster import cluster_shape


def git_sha() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"  # e.g. a `ray job submit` working dir, which carries no .git


def provenance_tags() -> dict[str, str]:
    """The commit, the versions of Python, Ray, torch and MLflow, and the cluster's shape."""
    import mlflow
    import ray
    import torch

    return {
        "git_sha": git_sha(),
        "ray_version": ray.__version__,
        "torch_version": torch.__version__,
        "mlflow_version": mlflow.__version__,
        "python_version": sys.version.split()[0],
        **cluster_shape(),
    }
