"""Capacity planning: the CPU cores a GPU node needs for its data feed to keep the GPUs busy.

    cores per GPU node = ceil(gpus x target images/s per GPU x headroom / feed images/s per core)
                         + gpus x train.cpus_per_worker      (one training process per GPU)
                         + reserved                          (raylet, object store, agents)

The feed rate per core is what `benchmarks/data_pipeline.py` (b) measures: prepared JPEG shards
decoded into uint8 batches delivered to the training workers, per place the decode can run
(`data.decode`). The defaults are this project's measurements (docs/benchmarks.md); measured
files (`--measured`) replace them: the JSON of `benchmarks/data_pipeline.py` (the feed per core
of each place) and `benchmarks/device_check.sh`'s (the GPU's training images/s, its nvJPEG
decode rate, and the decode rate of its node's CPU cores, which scales the feed rates).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

# benchmarks/data_pipeline.py (b) on 2 cores, 256 px JPEG shards, images/s per core delivered
# by decode place: the mean of three runs (docs/benchmarks.md: worker 2,583 / 2,707 / 2,520,
# tasks 2,070 / 2,116 / 2,249 images/s on 2 cores)
MEASURED_FEED_PER_CORE = {"tasks": 1072.0, "worker": 1302.0}
# one core's simplejpeg decode of benchmarks/gpu_decode.py's generated 256 px JPEGs on the same
# machine (`--cpu`, the median of three runs: 2,149 / 2,327 / 2,913): what device_check.json's
# figure for a GPU node's cores is compared with
MEASURED_CODEC_PER_CORE = 2327.0


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
    feed_per_core: float = MEASURED_FEED_PER_CORE["tasks"],
    cpus_per_worker: float = 1.0,
    reserved_cores: int = 1,
    headroom: float = 1.2,
) -> CapacityPlan:
    for name, value in (
        ("--gpu-images-per-second", images_per_second_per_gpu),
        ("--feed-per-core", feed_per_core),
        ("--gpus-per-node", gpus_per_node),
        ("--headroom", headroom),
    ):
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


@dataclass(frozen=True)
class Measured:
    """What the plan is computed from: this project's defaults, or measured files."""

    feed_per_core: dict[str, float] = field(default_factory=lambda: dict(MEASURED_FEED_PER_CORE))
    gpu_images_per_second: float | None = None  # training, the best setting of gpu_throughput
    gpu_decode_images_per_second: float | None = None  # nvJPEG, the best batch of gpu_decode
    node_codec_per_core: float | None = None  # simplejpeg on the GPU node's CPU (gpu_decode)
    feed_measured: bool = False  # feed_per_core from the user's own data_pipeline run
    sources: tuple[str, ...] = ()

    def feed(self, place: str) -> float:
        """images/s per core for `place`; this project's figures scaled by the GPU node's codec
        speed when device_check measured it (the same generated images as MEASURED_CODEC...)."""
        if self.node_codec_per_core and not self.feed_measured:
            return self.feed_per_core[place] * self.node_codec_per_core / MEASURED_CODEC_PER_CORE
        return self.feed_per_core[place]


def read_measurements(paths: list[str]) -> Measured:
    """`benchmarks/device_check.sh`'s device_check.json and/or the output (its last line) of
    `benchmarks/data_pipeline.py`, in any order. Raises ValueError naming a file it cannot use."""
    values: dict = {}
    for path in paths:
        try:
            report = _json_report(Path(path).read_text())
        except (OSError, ValueError, IndexError) as error:
            raise ValueError(f"--measured {path}: cannot read a JSON report ({error})") from None
        if "throughput" in report:
            values.update(_device_check(report))
        elif "feed_images_per_second" in report:
            cpus = report["cpus"]
            feeds = {p: v / cpus for p, v in report["feed_images_per_second"].items()}
            values.update(feed_per_core=feeds, feed_measured=True)
        else:
            raise ValueError(
                f"--measured {path}: neither device_check.json nor the JSON of "
                "benchmarks/data_pipeline.py"
            )
    return Measured(**values, sources=tuple(paths))


def _json_report(text: str) -> dict:
    """A JSON file, or a benchmark's output whose last line is the JSON report."""
    try:
        return json.loads(text)
    except ValueError:
        return json.loads(text.strip().splitlines()[-1])


def _device_check(report: dict) -> dict:
    values = {}
    throughput = (report["throughput"] or {}).get("report") or {}
    if throughput.get("best"):
        values["gpu_images_per_second"] = throughput["best"]["images_per_second"]
    decode = (report["decode"] or {}).get("report") or {}
    if decode.get("gpu_images_per_second"):
        values["gpu_decode_images_per_second"] = max(decode["gpu_images_per_second"].values())
    codec = decode.get("cpu_images_per_second_per_core", {}).get("simplejpeg")
    if codec:
        values["node_codec_per_core"] = codec
    return values


def describe_places(
    measured: Measured,
    images_per_second_per_gpu: float,
    gpus_per_node: int,
    cpus_per_worker: float,
    reserved_cores: int = 1,
    headroom: float = 1.2,
) -> str:
    """CPU cores per GPU node for each place the decode can run (`data.decode`)."""
    need = images_per_second_per_gpu * headroom  # per GPU
    training = math.ceil(gpus_per_node * cpus_per_worker)
    tasks = math.ceil(gpus_per_node * need / measured.feed("tasks"))
    worker = max(math.ceil(need / measured.feed("worker")), math.ceil(cpus_per_worker))
    cores = {"tasks": tasks + training, "worker": gpus_per_node * worker, "device": training}
    cores = {place: n + reserved_cores for place, n in cores.items()}
    per_gpu = {
        place: f"{n:>4} cores ({n / gpus_per_node:.1f} per GPU):" for place, n in cores.items()
    }
    lines = [
        "",
        f"CPU cores per GPU node by decode place (data.decode), {gpus_per_node} GPU(s) at "
        f"{images_per_second_per_gpu:,.0f} images/s x {headroom:g}; feed per core: tasks "
        f"{measured.feed('tasks'):,.0f}, worker {measured.feed('worker'):,.0f} images/s",
        f"  tasks   {per_gpu['tasks']} {tasks} decoding (here or on CPU-only nodes: "
        f"data.resources) + {training} training + {reserved_cores} Ray",
        f"  worker  {per_gpu['worker']} train.cpus_per_worker: {worker} (its threads decode) "
        f"x {gpus_per_node} + {reserved_cores} Ray",
    ]
    device = f"  device  {per_gpu['device']} {training} training + {reserved_cores} Ray; "
    rate = measured.gpu_decode_images_per_second
    if rate:
        shared = 1 / (1 / images_per_second_per_gpu + 1 / rate)  # decode and training take turns
        device += (
            f"the GPU decodes {rate:,.0f} images/s (nvJPEG, measured), so training on "
            f"the same GPU runs at ~{shared:,.0f} images/s "
            f"({shared / images_per_second_per_gpu:.0%})"
        )
    else:
        device += "the GPU's decode rate is not measured (benchmarks/device_check.sh)"
    return "\n".join([*lines, device])
