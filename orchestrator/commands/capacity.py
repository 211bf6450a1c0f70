"""`capacity`: the CPU cores a GPU node needs so the data feed keeps up with its GPUs."""

from __future__ import annotations

from orchestrator.capacity import MEASURED_FEED_PER_CORE, CapacityPlan, plan_capacity
from orchestrator.commands import add_config, add_overrides, load
from orchestrator.config import ExperimentConfig
from orchestrator.errors import ConfigError


def add_arguments(parser) -> None:
    add_config(parser, None)
    add_overrides(parser)
    parser.add_argument(
        "--gpu-images-per-second",
        type=float,
        required=True,
        help="the training throughput of one GPU (benchmarks/gpu_throughput.py)",
    )
    parser.add_argument("--gpus-per-node", type=int, default=1)
    parser.add_argument(
        "--feed-per-core",
        type=float,
        default=MEASURED_FEED_PER_CORE,
        help="images/s one core decodes and delivers (benchmarks/"
        f"data_pipeline.py (b); default: {MEASURED_FEED_PER_CORE:g}, measured here)",
    )
    parser.add_argument("--headroom", type=float, default=1.2,
                        help="feed capacity over the GPUs' demand (default 1.2)")  # fmt: skip


def run(args) -> None:
    capacity(load(args), args.gpu_images_per_second, args.gpus_per_node, args.feed_per_core,
             args.headroom)  # fmt: skip


def capacity(
    config: ExperimentConfig,
    images_per_second_per_gpu: float,
    gpus_per_node: int,
    feed_per_core: float,
    headroom: float,
) -> CapacityPlan:
    """The CPU cores a GPU node needs to feed its GPUs, and the config fields that set them."""
    try:
        plan = plan_capacity(images_per_second_per_gpu, gpus_per_node, feed_per_core,
                             config.train.cpus_per_worker, headroom=headroom)  # fmt: skip
    except ValueError as error:
        raise ConfigError(str(error)) from None
    print(plan.describe())
    return plan
