"""Capacity planning: the cores a GPU node needs, from the formula in docs/clusters.md."""

import json

import pytest

from orchestrator.data.capacity import (
    MEASURED_CODEC_PER_CORE,
    MEASURED_FEED_PER_CORE,
    plan_capacity,
    read_measurements,
)
from orchestrator.run import main


def test_cores_per_gpu_node_follow_the_formula():
    plan = plan_capacity(3000, gpus_per_node=4, feed_per_core=1150, cpus_per_worker=1.0)
    # ceil(4 x 3000 x 1.2 / 1150) = ceil(12.52) = 13 decode cores, + 4 workers + 1 for Ray
    assert (plan.decode_cores, plan.training_cores, plan.cores_per_node) == (13, 4.0, 18)
    assert plan_capacity(1150 / 1.2, feed_per_core=1150).decode_cores == 1  # exactly one core
    assert plan_capacity(1000, cpus_per_worker=0.5, reserved_cores=0).cores_per_node == 3
    # docs/benchmarks.md: the mean of three runs on 2 cores, by decode place
    assert MEASURED_FEED_PER_CORE["worker"] == pytest.approx((2583 + 2707 + 2520) / 6, rel=0.01)
    assert MEASURED_FEED_PER_CORE["tasks"] == pytest.approx((2070 + 2116 + 2249) / 6, rel=0.01)


def test_capacity_command(capsys):
    argv = [
        "capacity",
        "--gpu-images-per-second",
        "3000",
        "--gpus-per-node",
        "4",
        "--set",
        "train.cpus_per_worker=2",
    ]
    assert main(argv) == 0
    # ceil(4 x 3000 x 1.2 / 1072) = 14 decode cores (tasks) + 4 x 2 + 1
    assert "= 23 CPU cores per GPU node" in capsys.readouterr().out
    assert main(["capacity", "--gpu-images-per-second", "-5"]) == 2
    assert "--gpu-images-per-second: got -5.0" in capsys.readouterr().err


def test_capacity_from_measured_files(tmp_path, capsys):
    """device_check.json (GPU images/s, nvJPEG, the GPU node's CPU codec) and data_pipeline's
    output (feed per core by place) replace the defaults; each place's cores follow."""
    device_check = {
        "throughput": {"report": {"best": {"images_per_second": 5000.0}}},
        "decode": {
            "report": {
                "gpu_images_per_second": {"64": 8000.0, "256": 20000.0},
                "cpu_images_per_second_per_core": {"simplejpeg": 2 * 2150.0},
            }
        },
        "tests": {"report": None},
    }
    (tmp_path / "device_check.json").write_text(json.dumps(device_check, indent=1))
    measured = read_measurements([str(tmp_path / "device_check.json")])
    assert (measured.gpu_images_per_second, measured.gpu_decode_images_per_second) == (5000, 20000)
    # this project's feed figures, scaled by the node's codec speed over ours (same images)
    assert measured.feed("worker") == pytest.approx(
        MEASURED_FEED_PER_CORE["worker"] * 2 * 2150 / MEASURED_CODEC_PER_CORE
    )
    output = "benchmark chatter\n" + json.dumps(
        {"feed_images_per_second": {"tasks": 2000.0, "worker": 2500.0}, "cpus": 2}
    )
    (tmp_path / "pipeline.log").write_text(output)
    assert (
        main(
            [
                "capacity",
                "--measured",
                str(tmp_path / "device_check.json"),
                str(tmp_path / "pipeline.log"),
                "--gpus-per-node",
                "2",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    # per GPU 5000 x 1.2 = 6000 images/s; tasks: ceil(2 x 6000 / 1000) = 12 + 2 + 1
    assert "tasks     15 cores (7.5 per GPU): 12 decoding" in printed
    # worker: ceil(6000 / 1250) = 5 per worker, x 2 + 1
    assert "worker    11 cores (5.5 per GPU): train.cpus_per_worker: 5" in printed
    # device: decode and training share the GPU: 1 / (1/5000 + 1/20000) = 4000 images/s
    assert "device     3 cores" in printed and "~4,000 images/s (80%)" in printed
    (tmp_path / "bad.json").write_text('{"something": 1}')
    assert main(["capacity", "--measured", str(tmp_path / "bad.json")]) == 2
    assert "neither device_check.json nor" in capsys.readouterr().err
    assert main(["capacity"]) == 2  # no GPU rate given or measured
    assert "give --gpu-images-per-second" in capsys.readouterr().err
