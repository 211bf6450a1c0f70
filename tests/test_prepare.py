"""`prepare` through the real Ray Data job: shards, statistics, bad files, no-op, resume."""

import csv
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from conftest import S3_BUCKET
from image_zoo import BLUE, RED, write_zoo
from mlflow.tracking import MlflowClient

from orchestrator.commands import prepare as prepare_command
from orchestrator.common.errors import ConfigError
from orchestrator.common.storage import filesystem, open_input_file
from orchestrator.config.experiment import load_config
from orchestrator.data.prepare import PrepareConfig, run_prepare
from orchestrator.data.prepared import open_prepared
from workloads.datasets.synthetic import SyntheticConfig, generate

pytestmark = pytest.mark.ray
BAD = {"b_truncated.JPEG", "c_zero_bytes.JPEG", "d_text.JPEG"}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    for split in ("train", "val"):
        for label in ("cat", "dog"):
            kinds = write_zoo(root / split / label)
    assert {name for name, ok in kinds.items() if not ok} == BAD
    return root


@pytest.fixture(scope="module")
def prepared_zoo(ray_cluster, zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo_out") / "prepared"
    config = PrepareConfig(
        root=str(zoo), out=str(out), image_size=64, encoding="raw", max_reject_fraction=0.5
    )
    return config, run_prepare(config)


def _rows(out, split):
    rows = []
    for path in sorted((out / split).glob("*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


def test_bad_files_are_skipped_counted_and_listed(prepared_zoo, zoo):
    config, result = prepared_zoo
    out = Path(config.out)
    assert result.complete and result.total == 36 and result.rejects == 12
    assert result.images == {"train": 12, "val": 12}
    with open(out / "rejects.csv", newline="") as handle:
        rejects = list(csv.DictReader(handle))
    assert sorted((r["split"], os.path.relpath(r["path"], zoo)) for r in rejects) == sorted(
        (split, f"{split}/{label}/{name}")
        for split in ("train", "val")
        for label in ("cat", "dog")
        for name in BAD
    )
    assert all(r["reason"] for r in rejects)
    manifest = open_prepared(str(out)).manifest
    assert manifest.per_class == {"train": [6, 6], "val": [6, 6]}
    assert manifest.classes == ["cat", "dog"] and manifest.rejects == 12


def test_shards_hold_the_convertible_images_with_the_right_pixels(prepared_zoo):
    config, _ = prepared_zoo
    rows = _rows(Path(config.out), "train")
    assert len(rows) == 12
    labels = {}
    for row in rows:
        name = row["path"].rsplit("/", 1)[-1]
        assert name not in BAD
        labels[row["path"]] = row["label"]
        pixels = np.frombuffer(row["image"], np.uint8).reshape(64, 64, 3).astype(float)
        if name.startswith("g_"):  # grayscale arrives as equal RGB channels
            assert (pixels[..., 0] == pixels[..., 1]).all()
            continue
        first, second = pixels[:, :20].mean((0, 1)), pixels[:, -20:].mean((0, 1))
        if name.startswith("h_"):  # EXIF orientation applied: red on top
            first, second = pixels[:20].mean((0, 1)), pixels[-20:].mean((0, 1))
        assert np.abs(first - RED).max() < 25 and np.abs(second - BLUE).max() < 25, name
    assert labels == {path: int(path.startswith("train/dog")) for path in labels}
    ids = sorted(row["id"] for row in rows)
    assert len(set(ids)) == 12 and max(ids) < 18  # positions in the sorted listing


def test_statistics_equal_a_direct_numpy_computation(prepared_zoo):
    config, _ = prepared_zoo
    rows = _rows(Path(config.out), "train")
    images = np.stack([np.frombuffer(r["image"], np.uint8).reshape(64, 64, 3) for r in rows])
    images = images.astype(np.float64) / 255
    stats = open_prepared(config.out).stats
    assert stats.count == 12
    np.testing.assert_allclose(stats.mean_image, images.mean(axis=0), atol=1e-6)
    covariance = np.cov(images.reshape(-1, 3).T, bias=True)
    values, vectors = np.linalg.eigh(covariance)
    np.testing.assert_allclose(stats.eigenvalues, values[::-1], rtol=1e-4, atol=1e-8)
    for k in range(3):  # eigenvectors up to sign
        assert abs(abs(stats.eigenvectors[:, k] @ vectors[:, 2 - k]) - 1) < 1e-4


def test_second_prepare_is_a_no_op(prepared_zoo):
    config, _ = prepared_zoo
    out = Path(config.out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = run_prepare(config)
    assert again.skipped and again.processed == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps


def test_uri_output_and_too_many_rejects(ray_cluster, zoo, tmp_path):
    """A `file://` URI works like a path; past max_reject_fraction the run fails, names the
    count and the rejects file, writes no manifest, and MLflow records the failure."""
    db = tmp_path / "mlflow.db"
    config = load_config(
        None,
        [
            f"prepare.root={zoo}",
            f"prepare.out=file://{tmp_path}/strict",
            "prepare.image_size=32",
            f"tracking.uri=sqlite:///{db}",
        ],
    )
    with pytest.raises(ConfigError) as error:
        prepare_command.prepare(config)
    assert "12 of 36 files could not be read" in str(error.value)
    assert f"file://{tmp_path}/strict/rejects.csv" in str(error.value)
    assert (tmp_path / "strict" / "rejects.csv").exists()
    assert not (tmp_path / "strict" / "manifest.json").exists()
    client = MlflowClient(f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name("alexnet").experiment_id])
    assert run.info.status == "FAILED" and run.data.metrics["rejects"] == 12
    rejects = client.download_artifacts(run.info.run_id, "rejects.csv", str(tmp_path))
    assert len(open(rejects).read().splitlines()) == 13  # header + 12


DONE_MARKER = re.compile(r"_work/train-shard-.*\.json")  # a finished training shard's record


def _objects(uri: str) -> dict[str, int]:
    """{name under `uri`: modification time (ns)} of every file below a folder or URI."""
    fs, root = filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return {i.path[len(root) + 1 :]: i.mtime_ns for i in infos if i.type == pafs.FileType.File}


def _rows_in(uri: str) -> int:
    with open_input_file(uri) as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def test_interrupted_prepare_into_a_bucket_resumes_without_redoing_shards(
    ray_cluster, s3_server, tmp_path, start_cli
):
    """`prepare --out s3://...` on an S3 server, found through the standard AWS variables:
    killed midway, it resumes without redoing finished shards; resumed with other parameters it
    reuses nothing of the old plan; once complete, a re-run is a no-op."""
    source = SyntheticConfig(num_classes=8, train_per_class=250, val_per_class=10)
    root = generate(tmp_path / "src", source)
    out = f"s3://{S3_BUCKET}/{tmp_path.name}/out"
    process = start_cli(
        "prepare",
        "--root",
        str(root),
        "--out",
        out,
        "--set",
        "prepare.image_size=128",
        "--set",
        "prepare.shard_mb=1",
        "--set",
        f"tracking.uri=sqlite:///{tmp_path}/m.db",
        env={"RAY_ADDRESS": ray_cluster},
    )
    done = []
    deadline = time.monotonic() + 120
    while len(done) < 2 and time.monotonic() < deadline and process.poll() is None:
        done = [name for name in _objects(out) if DONE_MARKER.fullmatch(name)]
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    objects = _objects(out)
    assert "manifest.json" not in objects, "finished before it could be interrupted"
    finished = [
        f"train/{Path(name).stem.removeprefix('train-')}.parquet"
        for name in objects
        if DONE_MARKER.fullmatch(name)
    ]
    assert finished
    stamps = {name: objects[name] for name in finished}
    already = sum(_rows_in(f"{out}/{name}") for name in finished)

    # The same interrupted output, resumed with other parameters: nothing of the old plan is
    # reused (its shards hold other bytes), every image is decoded again at the new quality.
    other = f"s3://{S3_BUCKET}/{tmp_path.name}/other"
    fs, out_path = filesystem(out)
    pafs.copy_files(out_path, filesystem(other)[1], source_filesystem=fs, destination_filesystem=fs)
    redone = run_prepare(
        PrepareConfig(root=str(root), out=other, image_size=128, shard_mb=1, jpeg_quality=70)
    )
    assert redone.complete and redone.processed == 2080
    assert redone.manifest.params.jpeg_quality == 70
    assert redone.images == {"train": 2000, "val": 80}
    shards = sorted(name for name in _objects(other) if name.startswith("train/"))
    assert shards == redone.manifest.shards["train"]  # no stale shard left
    assert sum(_rows_in(f"{other}/{name}") for name in shards) == 2000

    config = PrepareConfig(root=str(root), out=out, image_size=128, shard_mb=1)
    result = run_prepare(config)
    assert result.complete and result.images == {"train": 2000, "val": 80}
    assert result.processed == 2080 - already  # only the unfinished shards were decoded
    objects = _objects(out)
    assert {name: objects[name] for name in finished} == stamps  # not rewritten
    assert {"manifest.json", "stats.npz", "rejects.csv"} <= set(objects)
    assert not [name for name in objects if name.startswith("_work/")]
    ids = []
    for name in result.manifest.shards["train"]:
        with open_input_file(f"{out}/{name}") as handle:
            ids += pq.read_table(handle, columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == list(range(2000))  # every image once
    assert open_prepared(out).count("train") == 2000  # what training opens

    again = run_prepare(config)
    assert again.skipped and again.processed == 0 and _objects(out) == objects  # a no-op


def test_quiet_shows_the_result_and_the_run_keeps_the_console(ray_cluster, zoo, tmp_path, capsys):
    """`-q`: the result on stdout, no progress or notes on stderr; by default the notes show
    (on stderr). The prepare's MLflow run keeps what its console showed as `console.log`."""
    from orchestrator.run import main

    db = tmp_path / "mlflow.db"
    args = ["prepare", "--root", str(zoo), "--out", str(tmp_path / "out")]
    for setting in ("prepare.image_size=32", "prepare.max_reject_fraction=0.5"):
        args += ["--set", setting]
    args += ["--set", f"tracking.uri=sqlite:///{db}"]
    assert main(["-q", *args]) == 0
    quiet = capsys.readouterr()
    assert "prepare: 24 images (" in quiet.out and "12 rejected" in quiet.out  # the result
    assert quiet.err == ""  # no "prepare: 8/36 files ... files/s" progress lines

    assert main(args) == 0  # again, at the default level: already complete, a note says so
    again = capsys.readouterr()
    assert again.out == "" and "(already complete: " in again.err

    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("alexnet").experiment_id
    first = client.search_runs([experiment], order_by=["attributes.start_time ASC"])[0]
    console = client.download_artifacts(first.info.run_id, "console.log", str(tmp_path))
    assert "prepare: 24 images (" in open(console).read()
