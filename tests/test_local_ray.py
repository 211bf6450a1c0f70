"""Commands run side by side on one machine, without RAY_ADDRESS, share one local Ray (the first
starts it, the last stops it) instead of each starting a Ray that counts every CPU as its own.
A CLI training and a CLI sweep doing so: test_sweep.py's Ctrl-C test."""

import json
import os
import subprocess
import sys

import psutil


def test_the_shared_ray_is_joined_by_like_commands_only_and_stopped_by_the_last(
    tmp_path, monkeypatch, caplog
):
    """The membership rules, without a command around them (on a real `ray start` head): a
    second command joins; a head of cluster/local.py that has exited is not joined; one whose
    credentials differ gets a Ray of its own, warned by the variable's name alone (as does one
    with another Python); the head never becomes the machine's current cluster (a user's own
    `ray.init()` would join it); the first to leave leaves it running, the last stops it, at
    once: a single machine's head runs without a node drain (it once sat out 30 s of one at
    every stop after a training) or a preemption watcher."""
    from orchestrator.common import local_ray, processes

    for name in processes.RAY_HEAD_ENV:  # (the session's Ray is run so too: conftest.py)
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALEXNET_RAY_HOME", str(tmp_path))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-first-secret")
    monkeypatch.setenv("RAY_AUTH_MODE", os.environ.get("RAY_AUTH_MODE", "token"))
    current = local_ray._current_cluster()
    before = current.read_text() if current.exists() else None
    (tmp_path / "local-head").mkdir()  # cluster/local.py's head, exited: not joined
    exited = {"pids": {"ray": os.getpid()}, "started": {"ray": 1.0}, "ray_port": 6390}
    (tmp_path / "local-head" / "head.json").write_text(json.dumps(exited))
    address, first = local_ray.join()
    marker = json.loads((local_ray.shared_folder() / "head.json").read_text())
    try:
        assert address == marker["address"] and processes.alive(marker["pid"])
        assert (current.read_text() if current.exists() else None) == before
        assert "the-first-secret" not in json.dumps(marker)
        head_env = psutil.Process(marker["pid"]).environ()
        assert {name: head_env.get(name) for name in processes.RAY_HEAD_ENV} == {
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
        }
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "another-secret")
        assert local_ray.join() == (local_ray.PRIVATE, None)
        assert "other values of AWS_SECRET_ACCESS_KEY" in caplog.text
        assert "another-secret" not in caplog.text
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-first-secret")
        with monkeypatch.context() as other:  # another checkout's virtual environment
            other.setattr(sys, "executable", "/elsewhere/.venv/bin/python")
            assert local_ray.join() == (local_ray.PRIVATE, None)
        assert "other values of python" in caplog.text
        again, second = local_ray.join()
        assert again == address and second is not None
        first.leave()
        assert processes.alive(marker["pid"])  # the second still uses it
        second.leave()
        assert not (local_ray.shared_folder() / "head.json").exists()
        assert processes.until(lambda: not processes.alive(marker["pid"]), 10, 0.2)
        assert "Draining" not in (local_ray.shared_folder() / "ray.log").read_text()
    finally:
        if processes.alive(marker["pid"]):
            processes.terminate({marker["pid"]: False})


def test_a_running_local_head_of_cluster_local_py_is_joined_instead(tmp_path, monkeypatch):
    """`cluster/local.py start`'s head (its state file: a `sleep` stands in for `ray start`) is
    joined while it runs, with token auth (once it has exited: the test above)."""
    from orchestrator.common import local_ray

    monkeypatch.setenv("ALEXNET_RAY_HOME", str(tmp_path))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    sleeper = subprocess.Popen(["sleep", "60"])
    state = tmp_path / "local-head"
    state.mkdir()
    started = {"ray": psutil.Process(sleeper.pid).create_time()}
    head = {"pids": {"ray": sleeper.pid}, "started": started, "ray_port": 6390}
    (state / "head.json").write_text(json.dumps(head))
    try:
        assert local_ray.join() == ("127.0.0.1:6390", None)
        assert os.environ["RAY_AUTH_MODE"] == "token"
    finally:
        sleeper.kill()
        sleeper.wait()
