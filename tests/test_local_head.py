"""`cluster/local.py stop` signals only the processes `start` started: a recorded pid now held by
another process (the pid was reused after ours exited) is left alone, with a message saying why;
`start` keeps the database's password off command lines and out of what it prints. No Ray and no
MLflow server: the head's state file records `sleep` processes."""

import argparse
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


def test_the_database_password_stays_off_command_lines_and_out_of_printed_logs(tmp_path):
    """`--mlflow-backend` once put the PostgreSQL password on a command line (`ps`, the shell's
    history), and a failed start printed the MLflow log's tail unmasked (a password with an
    unencoded `@` defeats the URI pattern), from a 0644 log in a 0755 folder. Now: refused on
    the command line, masked in the tail, the state folder 0700."""
    sys.path.insert(0, str(REPO_ROOT / "cluster"))
    import local

    refused = subprocess.run(
        [sys.executable, "cluster/local.py", "start", "--state-dir", str(tmp_path / "head")]
        + ["--mlflow-backend", "postgresql://mlflow:p@ss@127.0.0.1:5432/mlflow"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "--mlflow-backend: the URI holds a password" in (
        refused.stderr
    )
    assert "p@ss" not in refused.stdout + refused.stderr
    assert list((tmp_path / "head").iterdir()) == []  # refused before anything started
    args = argparse.Namespace(mlflow_backend="mysql-ish://x")
    with pytest.raises(SystemExit, match="allowed: a sqlite, postgresql, mysql, mssql URI"):
        local.backend_store(args, tmp_path)

    state = local.state_folder(str(tmp_path / "head"))
    assert state.stat().st_mode & 0o777 == 0o700
    log = state / "mlflow.log"
    log.write_text("sqlalchemy: could not connect to postgresql://mlflow:p@ss@127.0.0.1/mlflow\n")
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    with pytest.raises(SystemExit) as failed:
        local._wait_for("http://127.0.0.1:9/health", exited, log, timeout=5, secret="p@ss")
    assert "could not connect to postgresql://mlflow:***" in str(failed.value)
    assert "p@ss" not in str(failed.value) and "ss@127" not in str(failed.value)
