"""Capacity planning: the CPU cores a GPU node needs for its data feed to keep the GPUs busy.

    cores per GPU node = ceil(gpus x target images/s per GPU x headroom / feed images/s per core)
                         + gpus x train.cpus_per_worker      (one training process per GPU)
                         + reserved                          (raylet, object store, agents)

The feed rate per core is what `benchmarks/data_pipeline.py` (b) measures: prepared JPEG shards
decoded by Ray Data tasks into uint8 batches delivered to the training workers. The default is
this project's measurement (2,303 images/s on 2 cores, S = 256; README, Benchmarks); measure your
own nodes, whose cores are likely faster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MEASURED_FEED_PER_CORE = 1150.0  # images/s per core, benchmarks/data_pipeline.py (b), 2 cores


@dataclass(frozen=True)
class CapacityPlan:
    gpus_per_node: int
    images_per_second_per_gpu: float
    feed_per_core: float
    decode_cores: int  # for Ray Data's read/decode tasks
    training_cores: float  # train.cpus_per_worker per worker, a worker per GPU
    reserved_cores: int
    headroom: float

    @property
    def cores_per_node(self) -> int:
        return self.decode_cores + math.ceil(self.training_cores) + self.reserved_cores

    def describe(self) -> str:
        need = self.gpus_per_node * self.images_per_second_per_gpu
        return "\n".join(
            [
                f"{self.gpus_per_node} GPU(s) x {self.images_per_second_per_gpu:,.0f} images/s "
                f"= {need:,.0f} images/s to feed; at {self.feed_per_core:,.0f} images/s per core "
                f"with {self.headroom:g}x headroom: {self.decode_cores} decode cores",
                f"+ {self.training_cores:g} for the training workers "
                f"(train.cpus_per_worker x {self.gpus_per_node})",
                f"+ {self.reserved_cores} for Ray's own processes",
                f"= {self.cores_per_node} CPU cores per GPU node",
                "",
                "config and the Ray resources it maps to:",
                f"  train.num_workers: {self.gpus_per_node} x <nodes>      one worker per GPU",
                f"  train.cpus_per_worker: {self.training_cores / self.gpus_per_node:g}"
                "      -> ScalingConfig resources_per_worker CPU",
                "  data.decode_cpus: 1               -> num_cpus of each read/decode task",
                f"  data.max_cpus: {self.decode_cores} x <nodes>"
                "    -> Ray Data ExecutionResources(cpu=...) for the training streams",
                "  (or put the decode on CPU-only nodes: a cluster of CPU nodes with that many "
                "cores in total)",
            ]
        )


def plan_capacity(
    images_per_second_per_gpu: float,
    gpus_per_node: int = 1,
    feed_per_core: float = MEASURED_FEED_PER_CORE,
    cpus_per_worker: float = 1.0,
    reserved_cores: int = 1,
    headroom: float = 1.2,
) -> CapacityPlan:
    for name, value in (("--gpu-images-per-second", images_per_second_per_gpu),
                        ("--feed-per-core", feed_per_core), ("--gpus-per-node", gpus_per_node),
                        ("--headroom", headroom)):  # fmt: skip
        if not value > 0:
            raise ValueError(f"{name}: got {value}; allowed: a number > 0")
    need = images_per_second_per_gpu * gpus_per_node * headroom
    return CapacityPlan(
        gpus_per_node=gpus_per_node,
        images_per_second_per_gpu=images_per_second_per_gpu,
        feed_per_core=feed_per_core,
        decode_cores=math.ceil(need / feed_per_core),
        training_cores=cpus_per_worker * gpus_per_node,
        reserved_cores=reserved_cores,
        headroom=headroom,
    )
