"""`capacity`: the CPU cores a GPU node needs so the data feed keeps up with its GPUs."""

from __future__ import annotations

import dataclasses

from orchestrator.commands import add_config, add_overrides, load
from orchestrator.common.errors import ConfigError
from orchestrator.data.capacity import (
    MEASURED_FEED_PER_CORE,
    CapacityPlan,
    Measured,
    describe_places,
    plan_capacity,
    read_measurements,
)


def add_arguments(parser) -> None:
    add_config(parser, None)
    add_overrides(parser)
    parser.add_argument(
        "--gpu-images-per-second",
        type=float,
        help="the training throughput of one GPU (benchmarks/gpu_throughput.py); default: "
        "the best setting in --measured device_check.json",
    )
    parser.add_argument(
        "--measured",
        nargs="+",
        default=[],
        metavar="FILE",
        help="device_check.json of benchmarks/device_check.sh (GPU images/s, nvJPEG and CPU "
        "decode rates) and/or the output of benchmarks/data_pipeline.py (feed per core)",
    )
    parser.add_argument("--gpus-per-node", type=int, default=1)
    parser.add_argument(
        "--feed-per-core",
        type=float,
        help="images/s one core decodes and delivers (benchmarks/data_pipeline.py (b)); "
        f"default: measured here ({MEASURED_FEED_PER_CORE['tasks']:g} with tasks decoding)",
    )
    parser.add_argument(
        "--headroom",
        type=float,
        default=1.2,
        help="feed capacity over the GPUs' demand (default 1.2)",
    )


def run(args) -> None:
    try:
        measured = read_measurements(args.measured)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    capacity(
        load(args),
        args.gpu_images_per_second,
        args.gpus_per_node,
        args.feed_per_core,
        args.headroom,
        measured,
    )


def capacity(
    config,
    images_per_second_per_gpu: float | None,
    gpus_per_node: int,
    feed_per_core: float | None,
    headroom: float,
    measured: Measured = Measured(),
) -> CapacityPlan:
    """The CPU cores a GPU node needs to feed its GPUs, and the config fields that set them.
    `config`: the experiment config (its `train` section)."""
    gpu_rate = images_per_second_per_gpu or measured.gpu_images_per_second
    if gpu_rate is None:
        raise ConfigError(
            "capacity: give --gpu-images-per-second, or --measured with a "
            "device_check.json (benchmarks/device_check.sh)"
        )
    if feed_per_core is not None:
        feeds = {place: feed_per_core for place in MEASURED_FEED_PER_CORE}
        measured = dataclasses.replace(measured, feed_per_core=feeds, feed_measured=True)
    try:
        plan = plan_capacity(
            gpu_rate,
            gpus_per_node,
            measured.feed("tasks"),
            config.train.cpus_per_worker,
            headroom=headroom,
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if measured.sources:
        print(f"measured: {', '.join(measured.sources)}")
    print(plan.describe())
    print(
        describe_places(
            measured,
            gpu_rate,
            gpus_per_node,
            config.train.cpus_per_worker,
            plan.reserved_cores,
            headroom,
        )
    )
    return plan
