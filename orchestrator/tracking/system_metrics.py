"""A training node's system metrics (CPU, memory, disk, network, GPU) sampled into its run."""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass

from orchestrator.common.redact import redact_exception
from orchestrator.tracking.client import IMPORTING_MLFLOW


@dataclass(frozen=True)
class SystemMetricsTarget:
    """The run a training worker samples its node's system metrics into (handed to workers)."""

    tracking_uri: str
    run_id: str
    interval_s: float


def sampling_node(
    local_rank: int, node_rank: int, world_size: int, local_world_size: int
) -> tuple[bool, str | None]:
    """(whether this worker samples its node, the node's id in the metric names): the first
    worker of each node samples it; on one node the names stay `system/<metric>`, across
    several they are MLflow's per-node `system/node_<rank>/<metric>`."""
    several = world_size > local_world_size
    return local_rank == 0, (f"node_{node_rank}" if several else None)


@contextlib.contextmanager
def system_metrics(target: SystemMetricsTarget | None, node_id: str | None = None):
    """Samples this node's CPU, memory, disk, network and GPU into `target`'s run meanwhile
    (under `system/<node_id>/` when a node id is given).

    MLflow's `SystemMetricsMonitor`, in a thread; it goes on with the run's step count when a
    run is resumed. It starts beside the training (importing MLflow and asking the server for
    the run's history take seconds the training need not wait for); a monitor that cannot start
    costs a warning. Closing never waits long on an unreachable server.
    """
    if target is None:
        yield
        return
    import threading

    monitors = []

    def start() -> None:
        try:
            with IMPORTING_MLFLOW:
                from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
            # its HTTP retries in an outage, a line each: the driver reports the outage once
            logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
            monitor = SystemMetricsMonitor(
                target.run_id,
                sampling_interval=target.interval_s,
                resume_logging=True,
                node_id=node_id,
                tracking_uri=target.tracking_uri,
            )
            monitor.start()
            monitors.append(monitor)
        except Exception as error:  # noqa: BLE001 - the training goes on without it
            warnings.warn(
                f"system metrics are not sampled: {redact_exception(error)}", stacklevel=1
            )

    def finish() -> None:
        starting.join()
        for monitor in monitors:
            monitor.finish()

    starting = threading.Thread(target=start, daemon=True, name="system-metrics-start")
    starting.start()
    try:
        yield
    finally:
        closing = threading.Thread(target=finish, daemon=True)
        closing.start()
        closing.join(timeout=15)
