"""Nothing a user points at is deleted, overwritten or mixed: generated data and prepare outputs
go only into folders that are new, empty or marked as written by us, one writer at a time."""

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
    assert "partial work of an interrupted prepare" in capsys.readouterr().out


def test_a_bucket_lock_of_a_process_that_died_here_is_taken_over_at_once(s3_server):
    """On object storage the lock is an object with a heartbeat: a fresh one whose holder ran on
    another machine is respected; one whose holder ran here and is gone is taken over."""
    import socket
    import time

    from conftest import S3_BUCKET

    from orchestrator.common.storage import Busy

    out = Location.of(f"s3://{S3_BUCKET}/locks")
    exited = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    holders = [("elsewhere", 1, True), (socket.gethostname(), int(exited.stdout), False)]
    for host, pid, respected in holders:
        owner = {"host": host, "pid": pid, "what": "prepare"}
        out.write_json({"token": "t", "owner": owner, "heartbeat": time.time()}, LOCK_FILE)
        if respected:
            with pytest.raises(Busy, match="elsewhere"), out.exclusive(LOCK_FILE, "prepare"):
                pass
        else:
            with out.exclusive(LOCK_FILE, "prepare"):
                assert out.read_json(LOCK_FILE)["owner"]["pid"] != pid
    assert not out.exists(LOCK_FILE)  # released


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
