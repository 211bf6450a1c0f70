"""`cluster/local.py stop` signals only the processes `start` started: a recorded pid now held by
another process (the pid was reused after ours exited) is left alone, with a message saying why.
No Ray and no MLflow server: the head's state file records `sleep` processes."""

import json
import signal
import subprocess
import sys
import threading

import psutil
import pytest

from orchestrator.common.paths import REPO_ROOT


@pytest.fixture
def sleeper():
    """A `sleep 60` in its own process group (as `start` starts the head's processes), reaped by a
    thread as soon as it exits, so that a stopped one does not linger as a zombie."""
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    threading.Thread(target=process.wait, daemon=True).start()
    yield process
    process.kill()


def write_head(state, pids: dict, started: dict | None) -> None:
    head = {"pids": pids, "ray_port": 1, "dashboard_port": 2, "mlflow_port": 3}
    if started is not None:
        head["started"] = started
    (state / "head.json").write_text(json.dumps(head))


def stop(state) -> subprocess.CompletedProcess:
    command = [sys.executable, "cluster/local.py", "stop", "--state-dir", str(state)]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


def test_stop_leaves_a_reused_pid_alone(sleeper, tmp_path):
    started = psutil.Process(sleeper.pid).create_time()
    write_head(tmp_path, {"mlflow": sleeper.pid}, {"mlflow": started - 3600})  # ours: 1 h earlier
    result = stop(tmp_path)
    assert result.returncode == 0, result.stderr
    assert sleeper.poll() is None  # not signalled
    assert f"not signalling pid {sleeper.pid}: it is another process now" in result.stderr
    assert "mlflow had already exited and its pid was reused" in result.stderr
    assert not (tmp_path / "head.json").exists()  # nothing of ours is left to stop


def test_stop_without_a_recorded_start_time_signals_nothing(sleeper, tmp_path):
    write_head(tmp_path, {"ray": sleeper.pid}, started=None)  # a state file of an older local.py
    result = stop(tmp_path)
    assert sleeper.poll() is None
    assert f"not signalling pid {sleeper.pid}" in result.stderr
    assert "records no start time for ray" in result.stderr


def test_stop_ends_its_own_process(sleeper, tmp_path):
    started = psutil.Process(sleeper.pid).create_time()
    write_head(tmp_path, {"mlflow": sleeper.pid}, {"mlflow": started})
    result = stop(tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"stopped mlflow (pid {sleeper.pid})" in result.stdout
    assert sleeper.wait(timeout=10) == -signal.SIGTERM
