"""Where a run came from: MLflow's source tags (commit, entry point, user; common/source.py),
the library versions, the cluster's shape and the user's note, as tags every run records when
it starts (`TrackedRun.log_start`); and the environment (every installed package, CUDA, the
GPUs and their driver) as its `environment.txt`."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

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
        **environment_tags(),
        **({NOTE: note} if note else {}),
    }


def environment_tags() -> dict[str, str]:
    """CUDA, the cluster's GPU models (Ray's accelerator types) and this node's GPU driver, as
    far as there are any."""
    import ray
    import torch

    found = {}
    if torch.version.cuda:
        found["torch_cuda"] = torch.version.cuda  # the CUDA torch was built with
    if ray.is_initialized():
        types = sorted(
            key.removeprefix("accelerator_type:")
            for key in ray.cluster_resources()
            if key.startswith("accelerator_type:")
        )
        if types:
            found["gpu_models"] = ", ".join(types)
    driver = _gpu_driver()
    if driver:
        found["gpu_driver"] = driver
    return found


def environment_text() -> str:
    """The environment as a file: Python and the platform, and every installed package at its
    version (as `pip freeze` lists them); CUDA and the GPUs are the run's tags
    (`environment_tags`)."""
    lines = [f"python {sys.version.split()[0]} on {platform.platform()}"]
    packages = {
        f"{dist.metadata['Name']}=={dist.version}"
        for dist in metadata.distributions()
        if dist.metadata["Name"]
    }
    lines += ["", "packages:", *sorted(packages, key=str.lower)]
    return "\n".join(lines) + "\n"


def _gpu_driver() -> str | None:
    """This node's NVIDIA driver version (None without one)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return str(pynvml.nvmlSystemGetDriverVersion())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no GPU, no driver, no library
        return None
