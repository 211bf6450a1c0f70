"""Background services this project starts and stops itself (a local Ray head, an MLflow server):
finding their programs, free ports, waiting for them to answer, and ending exactly the processes
it started, never one that got their pid after they exited."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

# Ray's fixed defaults for these ports (52365, 10001, ...) clash with any other Ray on the
# machine (a laptop's ray.init(), a test cluster): a head's job agent then never comes up.
RAY_AGENT_PORT_OPTIONS = (
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--ray-client-server-port",
    "--metrics-export-port",
)

# What a Ray head on one machine (the shared local Ray, cluster/local.py's) runs with, its
# workers too. No drain: stopped with SIGTERM, `ray start --block` first drains its node, up to
# 30 s, for Serve replicas to move to other nodes; here there are none, and Ray Data's detached
# actors never give their leases back, so it sat out the whole wait after every training. No
# preemption watcher: an actor per training that polls for a cloud node's drain notice, which
# never comes to this machine.
RAY_HEAD_ENV = {
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}


def environment() -> dict[str, str]:
    """A copy of this process's environment, read name by name: another thread (MLflow's
    telemetry) may set or remove a variable meanwhile, which `dict(os.environ)` does not
    survive."""
    found = {name: os.environ.get(name) for name in list(os.environ)}
    return {name: value for name, value in found.items() if value is not None}


def tool(name: str) -> str:
    """A console script beside this Python (a venv not activated), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def free_port(preferred: int | None = None) -> int:
    """`preferred` if nothing listens on it on 127.0.0.1, else a port the kernel finds free."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as probe, contextlib.suppress(OSError):
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
            probe.bind(("127.0.0.1", port))
            return probe.getsockname()[1]
    raise OSError("no free port on 127.0.0.1")


def answers(url: str) -> bool:
    """Whether a server answers at `url` (any HTTP status: a 401 without a token answers)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def until(check, timeout: float, every: float) -> bool:
    """Whether `check()` came true within `timeout` seconds, asked every `every` seconds."""
    waiting = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(every),
        retry=retry_if_result(lambda done: not done),
        retry_error_callback=lambda state: False,
    )
    return waiting(check)


def alive(pid: int) -> bool:
    """Whether process `pid` exists (an exited one counts until its parent reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch); None if there is no such process."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def is_ours(pid: int, started: float | None) -> bool:
    """Whether `pid` is still the process recorded as started at `started`: the same pid started
    at the same time. A pid is reused once its process has exited, so a live pid alone proves
    nothing."""
    now = start_time(pid)
    return now is not None and started is not None and abs(now - started) < 0.01  # 1 clock tick


def terminate(targets: dict[int, bool], timeout: float = 10) -> None:
    """SIGTERM each process (`targets`: pid -> whether to signal its whole process group), wait
    for all of them together, then SIGKILL whatever of their groups is left. `ray start --block`
    alone stops every process it started, in seconds; a SIGTERM to all of Ray's processes at once
    takes it half a minute."""
    for pid, group in targets.items():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM) if group else os.kill(pid, signal.SIGTERM)

    def all_gone() -> bool:
        return not any(alive(pid) for pid in targets)

    until(all_gone, timeout, 0.2)
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    until(all_gone, 5, 0.1)  # a killed process takes a moment to go
