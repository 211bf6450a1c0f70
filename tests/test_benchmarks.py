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
        [sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_throughput.py"), "--tiny",
         "--prepared", tiny_prepared],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAY_ADDRESS": ray_cluster},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["device"] == "CPU"
    assert {r["setting"] for r in report["results"]} == {"fp32", "bf16+channels_last"}
    assert all(r["images_per_second"] > 0 and 0 < r["augment_share"] < 1 for r in report["results"])
    feed = report["ray_data_feed"]  # the best setting, fed by Ray Data from the shards
    assert feed["images_per_second"] > 0 and 0 <= feed["data_wait_fraction"] <= 1
