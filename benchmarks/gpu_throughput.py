"""Training-step throughput of the paper's AlexNet on one GPU, from synthetic uint8 batches.

Each step starts from a uint8 (B, 256, 256, 3) batch already on the device and runs what a
training worker runs: the paper's augmentation on the device (random 224 crop + flip, PCA colour
noise, mean subtraction; `BatchTransform`), then forward, backward and the SGD update. Settings:
fp32; bf16 autocast + channels_last; the same + `torch.compile`. Batch 128 to 1024. Reported:
images/s and achieved TFLOP/s (3 x 2 x 0.724 G multiply-adds per image for forward + backward),
and the augmentation's share of the step. The last output line is one JSON object.

    python benchmarks/gpu_throughput.py                 # on a CUDA machine
    python benchmarks/gpu_throughput.py --tiny          # a CPU smoke run of the same code path

benchmarks/device_check.sh runs it on a GPU machine with the GPU decode benchmark and tests/gpu.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from workloads.alexnet.engine import (  # noqa: E402
    OptimizerConfig,
    autocast_dtype_for,
    build_optimizer,
    timed,
    train_step,
)
from workloads.alexnet.model import ModelConfig, build_model  # noqa: E402
from workloads.alexnet.summary import layer_table  # noqa: E402
from workloads.alexnet.transforms import BatchTransform  # noqa: E402

SETTINGS = {  # name: (train.precision, channels_last, compile)
    "fp32": ("fp32", False, False),
    "bf16+channels_last": ("bf16", True, False),
    "bf16+channels_last+compile": ("bf16", True, True),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trainable(config, setting, batch_size, device):
    """(model to step, optimizer, autocast dtype, channels_last) for one setting."""
    precision, channels_last, compiled = SETTINGS[setting]
    dtype = autocast_dtype_for(device, precision)  # the training loop's rule
    torch.manual_seed(0)
    model = build_model(config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, OptimizerConfig(), batch_size)
    return (torch.compile(model) if compiled else model), optimizer, dtype, channels_last


def measure(config, image_size, batch_size, setting, device, warmup, steps) -> dict:
    step_model, optimizer, dtype, channels_last = _trainable(config, setting, batch_size, device)
    rng = np.random.default_rng(0)
    transform = BatchTransform(
        config.input_size, rng.random((image_size, image_size, 3)).astype(np.float32)
    )
    images = torch.randint(0, 256, (batch_size, image_size, image_size, 3), dtype=torch.uint8)
    images, ids = images.to(device), torch.arange(batch_size)
    labels = torch.randint(0, config.num_classes, (batch_size,), device=device)

    def step(epoch: int) -> None:
        inputs = transform.train(images, ids, epoch)  # (B, 3, C, C), channels-last memory
        if not channels_last:
            inputs = inputs.contiguous()
        train_step(step_model, optimizer, inputs, labels, autocast_dtype=dtype)

    for epoch in range(warmup):
        step(epoch)
    _sync(device)
    started = time.perf_counter()
    for epoch in range(steps):
        step(epoch)
    _sync(device)
    seconds = time.perf_counter() - started

    started = time.perf_counter()  # the augmentation alone
    for epoch in range(steps):
        transform.train(images, ids, epoch)
    _sync(device)
    augment_seconds = time.perf_counter() - started
    return {
        "images_per_second": batch_size * steps / seconds,
        "augment_share": augment_seconds / seconds,
    }


def measure_feed(config, prepared, batch_size, setting, device, steps) -> dict:
    """The same training step, fed by the real Ray Data stream from prepared shards.

    Shows whether training is input-bound: images/s next to the synthetic figure, and the
    fraction of the time spent waiting for the next batch.
    """
    import os

    import ray

    from orchestrator.data.config import DataConfig
    from orchestrator.data.prepared import open_prepared
    from orchestrator.data.streams import decoded_stream

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    data = open_prepared(prepared)
    stream = decoded_stream(data, "train", DataConfig(source="prepared", root=prepared), seed=0)
    step_model, optimizer, dtype, channels_last = _trainable(config, setting, batch_size, device)
    stats = data.stats
    transform = BatchTransform(
        config.input_size, stats.mean_image, stats.eigenvalues, stats.eigenvectors
    )
    done, waited, epoch = 0, 0.0, 0
    started = time.perf_counter()
    while done < steps:
        epoch += 1
        batches = stream.iter_torch_batches(
            batch_size=batch_size,
            device=device,
            pin_memory=device.type == "cuda",
            drop_last=True,
            prefetch_batches=4,
        )
        for batch, wait in timed(batches, sync=lambda: _sync(device)):
            waited += wait
            inputs = transform.train(batch["image"], batch["id"], epoch)
            if not channels_last:
                inputs = inputs.contiguous()
            train_step(step_model, optimizer, inputs, batch["label"], autocast_dtype=dtype)
            done += 1
            if done == steps:
                break
    _sync(device)
    seconds = time.perf_counter() - started
    return {
        "images_per_second": batch_size * done / seconds,
        "data_wait_fraction": waited / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: small net, 2 steps")
    parser.add_argument(
        "--prepared",
        help="a `prepare` output: also train the best setting from the real Ray Data feed "
        "(RAY_ADDRESS joins a running Ray, else a local one starts)",
    )
    parser.add_argument("--feed-steps", type=int, default=100)
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds: start no new measurement after this (the report covers what ran)",
    )
    args = parser.parse_args()
    started = time.perf_counter()

    if args.tiny:
        device = torch.device("cpu")
        config = ModelConfig(input_size=56, width=0.25, stem_stride=2, num_classes=10)
        image_size, args.batch_sizes, args.steps, args.warmup = 64, [8], 2, 1
        args.feed_steps = 4
        args.settings = [s for s in args.settings if "compile" not in s]
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --tiny for the CPU smoke run")
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True  # fp32 keeps PyTorch's defaults (TF32 convolutions)
        config, image_size = ModelConfig(num_classes=1000), 256
    model = build_model(config)
    macs = sum(row.macs for row in layer_table(model, config.input_size))
    flops_per_image = 3 * 2 * macs  # forward + backward (~2x forward)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; AlexNet {macs / 1e9:.3f} G multiply-adds per image")

    results, skipped = [], []
    for setting in args.settings:
        for batch_size in args.batch_sizes:
            if args.budget is not None and time.perf_counter() - started > args.budget:
                skipped.append({"setting": setting, "batch_size": batch_size})
                continue
            try:
                result = measure(
                    config, image_size, batch_size, setting, device, args.warmup, args.steps
                )
            except torch.OutOfMemoryError:
                print(f"{setting:<28} batch {batch_size:>5}: out of memory")
                torch.cuda.empty_cache()
                continue
            tflops = result["images_per_second"] * flops_per_image / 1e12
            results.append(
                {"setting": setting, "batch_size": batch_size, **result, "tflops": tflops}
            )
            print(
                f"{setting:<28} batch {batch_size:>5}: {result['images_per_second']:>9.0f} "
                f"images/s  {tflops:6.1f} TFLOP/s  augmentation {result['augment_share']:.0%} "
                "of the step",
                flush=True,
            )
    best = max(results, key=lambda r: r["images_per_second"])
    report = {"device": name, "best": best, "results": results}
    if skipped:
        report["skipped_over_budget"] = skipped
        print(f"over the {args.budget:g} s budget, not measured: {skipped}")
    if args.prepared:
        feed = measure_feed(
            config, args.prepared, best["batch_size"], best["setting"], device, args.feed_steps
        )
        setting, batch_size = best["setting"], best["batch_size"]
        report["ray_data_feed"] = {"setting": setting, "batch_size": batch_size, **feed}
        print(
            f"{setting:<28} batch {batch_size:>5}: {feed['images_per_second']:>9.0f} "
            f"images/s from the Ray Data feed of {args.prepared} (synthetic: "
            f"{best['images_per_second']:.0f}); waiting for data "
            f"{feed['data_wait_fraction']:.0%} of the time"
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
