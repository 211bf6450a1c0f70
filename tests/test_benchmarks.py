"""The GPU benchmark's code path, in its tiny CPU configuration (the GPU numbers need a GPU)."""

import json
import subprocess
import sys

from conftest import REPO_ROOT


def test_gpu_throughput_tiny_runs_the_same_code_path_on_cpu():
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_throughput.py"), "--tiny"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["device"] == "CPU"
    assert {r["setting"] for r in report["results"]} == {"fp32", "bf16+channels_last"}
    assert all(r["images_per_second"] > 0 and 0 < r["augment_share"] < 1 for r in report["results"])
