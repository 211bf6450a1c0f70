"""The GPU benchmark's code path, in its tiny CPU configuration (the GPU numbers need a GPU)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT


@pytest.mark.ray
def test_gpu_throughput_tiny_runs_the_same_code_path_on_cpu(ray_cluster, tiny_prepared):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "gpu_throughput.py"),
            "--tiny",
            "--settings",
            "bf16+channels_last",
            "--prepared",
            tiny_prepared,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAY_ADDRESS": ray_cluster},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["device"] == "CPU"
    assert [r["setting"] for r in report["results"]] == ["bf16+channels_last"]
    assert all(r["images_per_second"] > 0 and 0 < r["augment_share"] < 1 for r in report["results"])
    feed = report["ray_data_feed"]  # the best setting, fed by Ray Data from the shards
    assert feed["images_per_second"] > 0 and 0 <= feed["data_wait_fraction"] <= 1


def test_device_check_dry_run_writes_the_report_capacity_reads(tmp_path):
    """benchmarks/device_check.sh --cpu: the GPU machine's steps (throughput, decode, tests/gpu),
    tiny, on the CPU, without Ray; its one JSON file feeds `capacity --measured`."""
    script = REPO_ROOT / "benchmarks" / "device_check.sh"
    done = subprocess.run(
        ["bash", str(script), str(tmp_path), "--cpu"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert report["mode"] == "cpu dry run" and report["gpu"] is None and report["torch"]
    assert [report[step]["exit_status"] for step in ("throughput", "decode", "tests")] == [0] * 3
    throughput = report["throughput"]["report"]  # --tiny: the settings without compile
    assert [r["setting"] for r in throughput["results"]] == ["fp32", "bf16+channels_last"]
    best = throughput["best"]
    assert best["images_per_second"] > 0 and best["tflops"] > 0
    decode = report["decode"]["report"]
    assert decode["gpu_images_per_second"] is None and decode["image_size"] == 256
    assert set(decode["cpu_images_per_second_per_core"]) == {"torchvision", "simplejpeg"}
    assert "skipped" in report["tests"]["summary"]  # tests/gpu ran, and skip without CUDA
    planned = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "orchestrator" / "run.py"),
            "capacity",
            "--measured",
            str(tmp_path / "device_check.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert planned.returncode == 0, planned.stderr
    assert f"x {best['images_per_second']:,.0f} images/s" in planned.stdout
    assert "the GPU's decode rate is not measured" in planned.stdout
