"""Joining the Ray cluster (or starting a local one), quietly, and describing its shape; and
every place this project reaches into Ray's internals (a logger's name, Tune's list of
variables), each with the Ray version it was read from."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os

import ray
import ray.data

from orchestrator.common import local_ray, logs
from orchestrator.common.source import SOURCE_ENV, command_source

# Arrow's allocator (mimalloc) gives freed memory back to the OS 10 ms after it is freed, so a
# stream's next blocks and batches (megabytes each) page-fault all over again: purging off, the
# feed of raw shards measured ~40% faster here (docs/benchmarks.md), at the price of each
# process keeping the memory of its largest moment. Jobs get it from cluster/runtime_env.yaml
# and the KubeRay job's runtime environment.
ALLOCATOR_ENV = {"MIMALLOC_PURGE_DELAY": "-1"}


def ensure_ray() -> None:
    """Join the cluster in RAY_ADDRESS (or the job's cluster), else the machine's local Ray
    (common/local_ray.py), which the first command that needs it starts."""
    if ray.is_initialized():
        return
    # Ray Data logs several INFO lines per dataset execution (every epoch), which would bury the
    # epoch summaries; its warnings still show. The processes of a local Ray inherit this
    # setting; RAY_DATA_LOG_LEVEL=INFO brings the lines back.
    if "RAY_DATA_LOG_LEVEL" not in os.environ:
        os.environ["RAY_DATA_LOG_LEVEL"] = "WARNING"
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # configured at import
    for name, value in ALLOCATOR_ENV.items():  # inherited by a local Ray's processes
        os.environ.setdefault(name, value)
    address, membership = os.environ.get("RAY_ADDRESS") or None, None
    if address is None:
        address, membership = local_ray.join()
        read_auth_mode()  # (join sets the mode of the head it joins)
    try:
        ray.init(address=address, logging_level=logs.ray_init_level())
    except BaseException:
        if membership is not None:
            membership.leave()
        raise
    if membership is not None:  # (run before Ray's own shutdown, registered at its import)
        atexit.register(_leave, membership)
        # what this process's own calls that find "the" Ray on the machine (Ray Data's checks
        # of hanging tasks ask the State API so) find, whatever other Ray runs beside it
        os.environ["RAY_ADDRESS"] = address
    quiet_progress_bars()


def _leave(membership: local_ray.Membership) -> None:
    """At exit: disconnect from the machine's local Ray, then leave it (the last one out
    stops it)."""
    with contextlib.suppress(Exception):
        ray.shutdown()
    membership.leave()


def read_auth_mode() -> None:
    """Have this process (after `import ray`) read RAY_AUTH_MODE again: `ray.init` turns token
    auth on by itself only for a Ray it starts or finds on its own, never for an address it is
    given. (`ray._raylet.Config.initialize`, as Ray 2.60's own `_enable_token_auth` does.)"""
    from ray._raylet import Config

    Config.initialize("")


def quiet_progress_bars() -> None:
    """Our own lines report progress (per shard, per step, per epoch); Ray Data's bars, drawn by
    actors whose output is relayed line by line, turn into noise in logs."""
    ray.data.DataContext.get_current().enable_progress_bars = False
    # ... and its warning that they are off (here; Ray Data's own actors still say it once)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def dashboard_url() -> str:
    """The dashboard (which serves Ray's State API) of the cluster this process joined, as
    `http://host:port`; "" when it runs none. (`ray._private.worker._global_node.webui_url`,
    Ray 2.60: the public way, `ray.init()`'s `address_info`, is gone once another caller
    joined.)"""
    from ray._private import worker

    node = getattr(worker, "_global_node", None)
    url = getattr(node, "webui_url", None) or ""
    return url if not url or "://" in url else f"http://{url}"


def cluster_shape() -> dict[str, str]:
    """Nodes, CPUs and GPUs of the cluster this process joined ({} before it joined one)."""
    if not ray.is_initialized():
        return {}
    resources = ray.cluster_resources()
    return {
        "cluster_nodes": str(len([n for n in ray.nodes() if n["Alive"]])),
        "cluster_cpus": f"{resources.get('CPU', 0):g}",
        "cluster_gpus": f"{resources.get('GPU', 0):g}",
    }


# What Ray Tune copies from the driver's environment into every trial actor's runtime
# environment (ray/tune/execution/class_cache.py, Ray 2.60), which Ray's runtime_env_agent then
# writes to its log in plain text.
_TUNE_PROPAGATED_SECRETS = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SECURITY_TOKEN",
    "AWS_SESSION_TOKEN",
}


def keep_credentials_out_of_ray_logs() -> None:
    """Stop Ray Tune from copying the driver's AWS credentials into its trials' runtime
    environments (and so into the cluster's logs). The trials lose nothing: like Ray Data's
    tasks and Ray Train's workers, they run in worker processes that inherit their node's
    environment, which is where a cluster's credentials are set."""
    from ray.tune.execution import class_cache

    propagated = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    if isinstance(propagated, set | frozenset):
        class_cache.ENV_VARS_TO_PROPAGATE = set(propagated) - _TUNE_PROPAGATED_SECRETS


def carry_source_into_trials() -> None:
    """Have Ray Tune copy the command's source tags (common/source.py) and its log level
    (common/logs.py) into every trial actor, which creates its trial's MLflow run and training,
    from the same list it copies the credentials from."""
    from ray.tune.execution import class_cache

    command_source()  # resolved and published here, in the driver, if nobody carried it in
    propagated = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    if isinstance(propagated, set | frozenset):
        class_cache.ENV_VARS_TO_PROPAGATE = set(propagated) | {SOURCE_ENV, logs.LEVEL_ENV}


def quiet_report_echo() -> None:
    """Ray 2.60 logs every `ray.train.report` (a whole `TrainingReport(...)` dump) at INFO through
    a logger named by its source file's path, which `LoggingConfig` does not reach: set it to
    WARNING in this process (a training worker). Our own lines report each epoch."""
    suffix = "ray/train/v2/_internal/execution/context.py"
    for name in list(logging.root.manager.loggerDict):
        if name.replace("\\", "/").endswith(suffix):
            logging.getLogger(name).setLevel(logging.WARNING)
