"""Ray Data `prepare` and training feed against the plain PyTorch/PIL baselines, same machine.

(a) `prepare` images/s per CPU core (the whole job: listing, Ray Data decode/resize/crop/encode,
    Parquet shards, statistics) against a single-process PIL loop doing the same decode, resize,
    centre crop and JPEG encode of the same files.
(b) training-time feed, images/s delivered as uint8 torch batches (N, S, S, 3) from the same
    prepared shards: Ray Data (`decoded_stream` + `iter_torch_batches`) against a
    `torch.utils.data.DataLoader` with as many worker processes as Ray has CPUs, each reading its
    share of the shards and decoding with the same codec. (The random crop, flip and colour noise
    run on the training device in both cases, after this point.)
(c) the cost of the training shuffle: the Ray Data feed of (b) through the shuffle buffer a
    training worker draws its batches from (`data.shuffle_rows` images), against (b).

The corpus: generated ImageNet-like JPEGs (short side 300-420 px, quality 92, photo-like 1/f
texture, ~90 KB), written once under --work-dir. The last output line is one JSON object.

    python benchmarks/data_pipeline.py [--images 4000] [--cpus 2]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from orchestrator.data import DataConfig, decoded_stream, open_prepared, shuffle_options  # noqa: E402
from orchestrator.prepare import PrepareConfig, run_prepare  # noqa: E402
from workloads.datasets import codec  # noqa: E402
from workloads.datasets.image_folder import list_image_folder  # noqa: E402
from workloads.datasets.synthetic import write_photo_corpus  # noqa: E402

NUM_CLASSES = 20


def pil_prepare_loop(paths: list[str], size: int, quality: int) -> float:
    """The baseline: PIL decode, resize short side (bilinear, antialiased), crop, JPEG encode."""
    started = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            image = image.convert("RGB")
            width, height = image.size
            scale = size / min(width, height)
            new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
            image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
            left, top = (new_w - size) // 2, (new_h - size) // 2
            image = image.crop((left, top, left + size, top + size))
            image.save(io.BytesIO(), format="JPEG", quality=quality)
    return len(paths) / (time.perf_counter() - started)


class ShardDataset(torch.utils.data.IterableDataset):
    """The DataLoader baseline: each worker reads its share of the shards' row batches."""

    def __init__(self, files: list[str], rows_per_batch: int):
        self.files, self.rows_per_batch = files, rows_per_batch

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        units = [(f, g) for f in self.files for g in range(pq.ParquetFile(f).num_row_groups)]
        for file, group in units[worker::workers]:
            table = pq.ParquetFile(file).read_row_group(group, columns=["id", "label", "image"])
            labels, ids = table.column("label").to_numpy(), table.column("id").to_numpy()
            for data, label, image_id in zip(table.column("image").to_pylist(), labels, ids):
                yield torch.from_numpy(codec.decode_jpeg(data)), int(label), int(image_id)


def time_passes(make_batches, passes: int) -> list[float]:
    """images/s of each full pass over the data (`make_batches(epoch)`, epochs from 1)."""
    rates = []
    for epoch in range(1, passes + 1):
        started, count = time.perf_counter(), 0
        for images in make_batches(epoch):
            count += len(images)
        rates.append(count / (time.perf_counter() - started))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4000, help="training images in the corpus")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs for Ray = DataLoader workers")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--passes", type=int, default=3, help="feed passes; the first warms up")
    parser.add_argument(
        "--baseline-images", type=int, default=1500, help="files the PIL loop times"
    )
    parser.add_argument("--work-dir", type=Path, default=Path("data/bench"))
    args = parser.parse_args()

    per_class = max(1, args.images // NUM_CLASSES)
    print(f"corpus: {per_class * NUM_CLASSES} training images in {args.work_dir} (made once)")
    root = write_photo_corpus(
        args.work_dir / f"photos-{per_class * NUM_CLASSES}", NUM_CLASSES, per_class, 5
    )
    paths = list_image_folder(root, "train").paths

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False

    def prepare(source: Path, name: str):
        out = args.work_dir / name
        shutil.rmtree(out, ignore_errors=True)  # time a full preparation, not a no-op
        return run_prepare(
            PrepareConfig(
                root=str(source),
                out=str(out),
                image_size=args.image_size,
                jpeg_quality=args.quality,
            )
        )

    # Warm the Ray workers up first (process start and imports, ~2 s here): what is timed is the
    # per-image cost of a long run, not the cluster's start-up.
    prepare(write_photo_corpus(args.work_dir / "photos-warmup", NUM_CLASSES, 2, 1), "warmup")
    result = prepare(root, "prepared")
    prepare_per_core = result.images_per_second_per_core
    pil_per_core = pil_prepare_loop(paths[: args.baseline_images], args.image_size, args.quality)
    print(f"(a) prepare: Ray Data {result.images_per_second:.0f} images/s on {result.cpus:g} "
          f"cores = {prepare_per_core:.0f}/core; PIL loop {pil_per_core:.0f}/core; "
          f"ratio {prepare_per_core / pil_per_core:.2f}")  # fmt: skip

    out = args.work_dir / "prepared"
    data = open_prepared(str(out))
    stream = decoded_stream(data, "train", DataConfig(source="prepared", root=str(out)), seed=0)

    def ray_feed_passes(shuffle_rows: int) -> list[float]:
        return time_passes(
            lambda epoch: (
                b["image"]
                for b in stream.iter_torch_batches(
                    batch_size=args.batch_size,
                    prefetch_batches=2,
                    **shuffle_options(shuffle_rows, seed=0, epoch=epoch),
                )  # fmt: skip
            ),
            args.passes,
        )

    ray_rates = ray_feed_passes(0)
    loader = torch.utils.data.DataLoader(
        ShardDataset(data.files("train"), 64),
        batch_size=args.batch_size,
        num_workers=args.cpus,
        persistent_workers=True,
        prefetch_factor=2,
    )
    loader_rates = time_passes(lambda _: (images for images, _, _ in loader), args.passes)
    ray_feed, loader_feed = np.mean(ray_rates[1:]), np.mean(loader_rates[1:])
    print(f"(b) feed: Ray Data {ray_feed:.0f} images/s, DataLoader ({args.cpus} workers) "
          f"{loader_feed:.0f} images/s; ratio {ray_feed / loader_feed:.2f} "
          f"(passes: Ray {[round(r) for r in ray_rates]}, DataLoader "
          f"{[round(r) for r in loader_rates]})")  # fmt: skip
    shuffle_rows = DataConfig().shuffle_rows
    shuffled_rates = ray_feed_passes(shuffle_rows)
    shuffled_feed = np.mean(shuffled_rates[1:])
    print(f"(c) shuffle: Ray Data through a {shuffle_rows}-image shuffle buffer "
          f"{shuffled_feed:.0f} images/s, {shuffled_feed / ray_feed:.2f} of (b) "
          f"(passes {[round(r) for r in shuffled_rates]})")  # fmt: skip
    print(
        json.dumps(
            {
                "prepare_per_core_ratio": round(prepare_per_core / pil_per_core, 3),
                "prepare_images_per_second": round(result.images_per_second, 1),
                "prepare_images_per_second_per_core": round(prepare_per_core, 1),
                "pil_loop_images_per_second": round(pil_per_core, 1),
                "feed_ratio": round(ray_feed / loader_feed, 3),
                "feed_ray_data_images_per_second": round(ray_feed, 1),
                "feed_dataloader_images_per_second": round(loader_feed, 1),
                "feed_shuffled_images_per_second": round(shuffled_feed, 1),
                "shuffle_rows": shuffle_rows,
                "images": len(paths),
                "cpus": args.cpus,
                "image_size": args.image_size,
            }
        )
    )


if __name__ == "__main__":
    main()
