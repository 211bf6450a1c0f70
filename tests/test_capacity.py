"""Capacity planning: the cores a GPU node needs, from the formula in cluster/README.md."""

import pytest

from orchestrator.capacity import MEASURED_FEED_PER_CORE, plan_capacity
from orchestrator.run import main


def test_cores_per_gpu_node_follow_the_formula():
    plan = plan_capacity(3000, gpus_per_node=4, feed_per_core=1150, cpus_per_worker=1.0)
    # ceil(4 x 3000 x 1.2 / 1150) = ceil(12.52) = 13 decode cores, + 4 workers + 1 for Ray
    assert (plan.decode_cores, plan.training_cores, plan.cores_per_node) == (13, 4.0, 18)
    assert plan_capacity(1150 / 1.2, feed_per_core=1150).decode_cores == 1  # exactly one core
    assert plan_capacity(1000, cpus_per_worker=0.5, reserved_cores=0).cores_per_node == 3
    assert MEASURED_FEED_PER_CORE == pytest.approx(2303 / 2, rel=0.01)  # the README's benchmark


def test_capacity_command(capsys):
    argv = ["capacity", "--gpu-images-per-second", "3000", "--gpus-per-node", "4",
            "--set", "train.cpus_per_worker=2"]  # fmt: skip
    assert main(argv) == 0
    assert "= 22 CPU cores per GPU node" in capsys.readouterr().out  # 13 + 4 x 2 + 1
    assert main(["capacity", "--gpu-images-per-second", "-5"]) == 2
    assert "--gpu-images-per-second: got -5.0" in capsys.readouterr().err
