"""Nothing a user points at is deleted, overwritten or mixed: generated data and prepare outputs
go only into folders that are new, empty or marked as written by us, one writer at a time."""

import socket
import subprocess
import sys

import pytest

from orchestrator.common.errors import ConfigError
from orchestrator.common.paths import DEMO_CONFIG
from orchestrator.common.storage import Location
from orchestrator.config.experiment import load_config
from orchestrator.data.prepare import LOCK_FILE, PrepareConfig, run_prepare
from orchestrator.data.sources import raw_source
from workloads.datasets.synthetic import SyntheticConfig, generate

TINY = SyntheticConfig(num_classes=2, train_per_class=2, val_per_class=1)


def _user_folder(tmp_path):
    photos = tmp_path / "photos"
    (photos / "2024").mkdir(parents=True)
    (photos / "2024" / "beach.jpg").write_bytes(b"my holiday")
    (photos / "notes.txt").write_text("keep me")
    return photos


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_demo_config_never_replaces_a_users_folder(tmp_path):
    photos = _user_folder(tmp_path)
    before = _snapshot(photos)
    config = load_config(DEMO_CONFIG, [f"data.root={photos}"])
    with pytest.raises(ConfigError, match=r"data.root .*photos is not empty and holds no "):
        raw_source(config.data, config.prepare)
    assert _snapshot(photos) == before

    empty = tmp_path / "empty"
    empty.mkdir()
    assert (generate(empty, TINY) / "train").is_dir()  # an empty folder is fine
    again = generate(empty, SyntheticConfig(num_classes=3, train_per_class=2, val_per_class=1))
    assert len(list((again / "train").iterdir())) == 3  # its own output is replaced


def test_prepare_writes_only_into_new_empty_or_its_own_folders(tmp_path):
    source = generate(tmp_path / "src", TINY)
    photos = _user_folder(tmp_path)
    before = _snapshot(photos)
    not_ours = r"prepare.out: .*photos is not empty \(2024, notes.txt\)"
    with pytest.raises(ConfigError, match=not_ours):
        run_prepare(PrepareConfig(root=str(source), out=str(photos), image_size=32))
    assert _snapshot(photos) == before


def test_a_second_prepare_into_the_same_output_stops_at_once(tmp_path):
    source = generate(tmp_path / "src", TINY)
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(out / LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, b'{\"pid\": 4242}')\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=r"another prepare is writing to .*out.*4242"):
            run_prepare(PrepareConfig(root=str(source), out=str(out), image_size=32))
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_partial_work_of_another_plan_is_discarded(tmp_path, capsys):
    from orchestrator.data.prepare import _discard_other_plans

    out = Location.of(str(tmp_path / "out"))
    for folder in ("_work", "train", "val"):
        out.make_dirs(folder)
    out.write_json({"key": "old", "images_per_shard": 5}, "_work", "plan.json")
    out.write_json({"images": 5}, "_work", "train-shard-00000-of-00002.json")
    out.write_bytes(b"old shard", "train", "shard-00000-of-00002.parquet")

    _discard_other_plans(out, "old")  # the same plan: its work is kept
    assert out.exists("_work", "train-shard-00000-of-00002.json")
    _discard_other_plans(out, "new")
    assert out.names() == []
    assert "partial work of an interrupted prepare" in capsys.readouterr().err


def test_a_bucket_lock_is_taken_over_only_from_a_holder_known_to_be_gone(s3_server):
    """On object storage the lock is an object with a heartbeat. A fresh one is respected when
    its holder runs on another machine, or on this host name in another pid namespace (a
    container with host networking: its pid is not visible here, which once declared it dead);
    one whose holder ran in this kernel and pid namespace and has exited is taken over at once."""
    import time

    from conftest import S3_BUCKET

    from orchestrator.common.locks import Busy, _process_id, exclusive

    out = Location.of(f"s3://{S3_BUCKET}/locks")
    exited = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    here = {"host": socket.gethostname(), "pid": int(exited.stdout), **_process_id()}
    holders = [
        ({**here, "host": "elsewhere", "boot": "another-kernel"}, True),
        ({**here, "pid_ns": "pid:[1]"}, True),  # a container on this host
        (here, False),
    ]
    for owner, respected in holders:
        out.write_json({"token": "t", "owner": owner, "heartbeat": time.time()}, LOCK_FILE)
        if respected:
            with pytest.raises(Busy, match=owner["pid_ns"].replace("[", r"\[")):
                with exclusive(out, LOCK_FILE, "prepare"):
                    pass
        else:
            with exclusive(out, LOCK_FILE, "prepare"):
                assert out.read_json(LOCK_FILE)["owner"]["pid"] != owner["pid"]
    assert not out.exists(LOCK_FILE)  # released


HOLDER = """
import sys, time
from orchestrator.common import locks
from orchestrator.common.storage import Location
locks.LOCK_HEARTBEAT_S, locks.LOCK_STALE_S = {heartbeat}, {stale}
try:
    with locks.exclusive(Location.of(sys.argv[1]), "contested.lock", "first") as lease:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lease.check()
            print("held", time.time(), flush=True)
            time.sleep(0.05)
except locks.LockLost as error:
    print("lost", time.time(), error, flush=True)
    sys.exit(3)
"""


def test_a_bucket_lock_holder_that_stalls_loses_it_and_stops(s3_server, monkeypatch, tmp_path):
    """A holder whose heartbeats stop for longer than the stale limit (here: a paused process,
    as a long GC pause or a network blip would leave it) once went on believing it held the
    lock, overwrote its new holder's lock and deleted it on exit, letting a third writer in.
    Now, with shortened timings on the tests' S3 server: the first holder stops believing before
    the second takes over (never two at once), stops with a clear error when it wakes, and
    leaves the second's lock alone."""
    import signal
    import threading
    import time

    from conftest import S3_BUCKET

    from orchestrator.common import locks

    heartbeat, stale = 0.3, 2.0
    monkeypatch.setattr(locks, "LOCK_HEARTBEAT_S", heartbeat)
    monkeypatch.setattr(locks, "LOCK_STALE_S", stale)
    out = Location.of(f"s3://{S3_BUCKET}/contested")
    first = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(heartbeat=heartbeat, stale=stale), out.uri],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = [first.stdout.readline()]
    assert lines[0].startswith("held")
    with pytest.raises(locks.Busy, match="first"):
        with locks.exclusive(out, "contested.lock", "second"):
            pass
    first.send_signal(signal.SIGSTOP)  # its heartbeats stop
    time.sleep(stale + 0.5)
    with locks.exclusive(out, "contested.lock", "second") as lease:
        taken = time.time()
        first.send_signal(signal.SIGCONT)
        lines += first.communicate(timeout=60)[0].splitlines()
        lease.check()  # still ours
        assert out.read_json("contested.lock")["owner"]["what"] == "second"
    held = [float(line.split()[1]) for line in lines if line.startswith("held")]
    assert first.returncode == 3 and lines[-1].startswith("lost")
    assert "contested.lock" in lines[-1] and "stopped before writing more" in lines[-1]
    assert max(held) < taken  # it never believed it held the lock once the second had it
    assert not out.exists("contested.lock")  # the second released its own

    # Writers starting at the same instant: S3's conditional create lets exactly one in
    barrier, outcomes = threading.Barrier(4), []

    def start(name: str) -> None:
        barrier.wait()
        try:
            with locks.exclusive(out, "contested.lock", name):
                outcomes.append("held")
                time.sleep(0.5)
        except locks.Busy:
            outcomes.append("busy")

    starters = [threading.Thread(target=start, args=(f"w{i}",)) for i in range(4)]
    for thread in starters:
        thread.start()
    for thread in starters:
        thread.join()
    assert sorted(outcomes) == ["busy", "busy", "busy", "held"]

    # A local (fcntl) lock is the kernel's until its holder exits: never lost by time (a
    # prepare of hours checks its lease before it commits)
    with locks.exclusive(Location.of(str(tmp_path)), "local.lock", "long") as lease:
        time.sleep(stale + 0.2)
        lease.check()


def test_s3_endpoint_from_the_standard_aws_variables(monkeypatch):
    import pyarrow.fs as pafs

    from orchestrator.common.storage import filesystem, uri_of

    def s3(endpoint: str, scheme: str) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(endpoint_override=endpoint, scheme=scheme, region="us-east-1")

    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    fs, path = filesystem("s3://bucket/prepared/tiny/")
    assert path == "bucket/prepared/tiny" and fs.equals(s3("127.0.0.1:9", "http"))
    assert uri_of(fs, f"{path}/checkpoint_1") == "s3://bucket/prepared/tiny/checkpoint_1"
    assert uri_of(pafs.LocalFileSystem(), "/data/x") == "/data/x"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "minio.internal:9000")  # the S3-specific one wins
    assert filesystem("s3://bucket/x")[0].equals(s3("minio.internal:9000", "https"))
    # pyarrow's own options in the URI take precedence over the variables
    uri = "s3://bucket/x?endpoint_override=127.0.0.1:8&scheme=http&region=us-east-1"
    fs, path = filesystem(uri)
    assert path == "bucket/x" and fs.equals(s3("127.0.0.1:8", "http"))
