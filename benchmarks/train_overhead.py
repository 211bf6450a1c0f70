"""What Ray Train costs: the same AlexNet steps in a plain PyTorch loop and in one Ray Train worker.

Both run the same function over the same batches (uint8 images made from a fixed seed, the
demo's quarter-width AlexNet on 56 px crops): on-device augmentation, forward, backward, SGD.
The plain loop runs in this process; the other inside a `TorchTrainer` with one worker given the
same number of CPU threads. Steady-state images/s: the median of five timed segments after
warm-up steps; the plain loop runs before and after the Ray one and its mean is the baseline.
The last output line is one JSON object with `ratio` (Ray Train / plain) and both images/s.

    python benchmarks/train_overhead.py [--steps 150] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import ray  # noqa: E402
import ray.train  # noqa: E402
import ray.train.torch  # noqa: E402
import torch  # noqa: E402

from workloads.alexnet.engine import OptimizerConfig, build_optimizer, train_step  # noqa: E402
from workloads.alexnet.model import ModelConfig, build_model  # noqa: E402
from workloads.alexnet.transforms import BatchTransform  # noqa: E402

MODEL = ModelConfig(input_size=56, width=0.25, stem_stride=2, num_classes=10, init="kaiming")


def timed_steps(settings: dict) -> float:
    """Steady-state images/s of `steps` training steps after `warmup` ones, in this process."""
    torch.set_num_threads(settings["threads"])
    torch.manual_seed(0)
    model = build_model(MODEL)
    optimizer = build_optimizer(model, OptimizerConfig(), settings["batch_size"])
    rng = np.random.default_rng(0)
    transform = BatchTransform(56, rng.random((64, 64, 3)).astype(np.float32), seed=0)
    batch = settings["batch_size"]
    images = torch.from_numpy(rng.integers(0, 256, (batch, 64, 64, 3), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, 10, batch))
    ids = np.arange(batch)

    def step(i: int) -> None:
        train_step(model, optimizer, transform.train(images, ids, i).contiguous(), labels)

    for i in range(settings["warmup"]):
        step(i)
    rates = []  # the median of 5 timed segments: robust to a background process's burst
    per_segment = max(1, settings["steps"] // 5)
    for segment in range(5):
        started = time.perf_counter()
        for i in range(per_segment):
            step(settings["warmup"] + segment * per_segment + i)
        rates.append(batch * per_segment / (time.perf_counter() - started))
    return float(np.median(rates))


def train_fn_per_worker(settings: dict) -> None:
    metrics = {"images_per_second": timed_steps(settings)}
    with tempfile.TemporaryDirectory() as folder:  # Result.metrics keeps checkpointed reports
        Path(folder, "metrics.json").write_text(json.dumps(metrics))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch in both runs (leave Ray a core)",
    )
    args = parser.parse_args()
    settings = {
        "steps": args.steps,
        "warmup": args.warmup,
        "batch_size": args.batch_size,
        "threads": args.threads,
    }

    plain_before = timed_steps(settings)
    ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as storage:
        result = ray.train.torch.TorchTrainer(
            train_fn_per_worker,
            train_loop_config=settings,
            scaling_config=ray.train.ScalingConfig(
                num_workers=1, resources_per_worker={"CPU": args.threads}
            ),
            run_config=ray.train.RunConfig(storage_path=storage, name="train-overhead"),
        ).fit()
    ray_train = result.metrics["images_per_second"]
    ray.shutdown()
    plain_after = timed_steps(settings)
    plain = (plain_before + plain_after) / 2
    print(
        f"plain PyTorch loop: {plain:.0f} images/s ({plain_before:.0f} before, "
        f"{plain_after:.0f} after); one Ray Train worker: {ray_train:.0f} images/s; "
        f"ratio {ray_train / plain:.3f}"
    )
    print(
        json.dumps(
            {
                "ratio": round(ray_train / plain, 3),
                "ray_train_images_per_second": round(ray_train, 1),
                "plain_images_per_second": round(plain, 1),
                "threads": args.threads,
                "batch_size": args.batch_size,
            }
        )
    )


if __name__ == "__main__":
    main()
