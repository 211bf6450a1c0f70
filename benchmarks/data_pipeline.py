"""Ray Data `prepare` and training feed against the plain PyTorch/PIL baselines and the codec's
own limit, same machine, same run.

(a) `prepare` images/s per CPU core (the whole job: listing, Ray Data decode/resize/crop/encode,
    Parquet shards, statistics) against the codec limit: a single-process loop of exactly the
    per-image calls `prepare` makes (read the file, decode + resize + centre crop, JPEG encode),
    no Ray, no Parquet, no statistics; each timed twice in turn, the best of each. Also against a
    PIL loop doing the same (the baseline a user would write).
(b) training-time feed, images/s delivered as uint8 torch batches (N, S, S, 3) from the same
    prepared JPEG shards, for each place `data.decode` can put the decode (data/feed.py):
    `worker` (the training process decodes the streamed JPEG bytes in a thread pool; the default
    on CPU nodes) and `tasks` (Ray Data tasks decode, the pixels stream), against a
    `torch.utils.data.DataLoader` with as many worker processes as Ray has CPUs, each reading its
    share of the shards and decoding with the same codec; and against the codec limit: a
    single-process loop of the same decode over the same bytes, times the CPUs. (The random crop,
    flip and colour noise run on the training device in every case, after this point.)
(c) the cost of the training shuffle: the default feed of (b) through the shuffle buffer a
    training worker draws its batches from (`data.shuffle_rows` images), against (b).
(d) the decode-free path: the same corpus prepared with `encoding: raw` (pixels stored), fed the
    same way, against the DataLoader of (b); and a DataLoader reading the raw shards; and the raw
    feed through the shuffle buffer of (c).

A feed's pass is an epoch of `--epoch-reads` x the corpus (its shards listed that many times), for
every feed alike: an epoch of Ray Data starts a new execution, ~0.3 s here before the first batch
(even of an 8-row dataset), which a 4,000-image epoch of the raw feed (0.5 s) would mostly
measure, and an ImageNet epoch (1.28 M images) never notices. That start is reported on its own
(`epoch_start_seconds`: time to each feed's first batch).

The corpus: generated ImageNet-like JPEGs (short side 300-420 px, quality 92, photo-like 1/f
texture, ~90 KB), written once under --work-dir. The last output line is one JSON object.

    python benchmarks/data_pipeline.py [--images 4000] [--cpus 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# A training run's setting of Arrow's allocator (common/ray_cluster.py ALLOCATOR_ENV), set
# before Arrow loads, for every process here: Ray's, this one (which consumes the stream, as a
# training worker does) and the DataLoader's, so that both sides run with it.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "-1")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from orchestrator.data.config import DataConfig  # noqa: E402
from orchestrator.data.feed import Feed, decode_place, decode_threads  # noqa: E402
from orchestrator.data.prepare import PrepareConfig, run_prepare  # noqa: E402
from orchestrator.data.prepared import open_prepared  # noqa: E402
from orchestrator.data.streams import shuffle_options, split_stream  # noqa: E402
from workloads.datasets import codec  # noqa: E402
from workloads.datasets.image_folder import list_image_folder  # noqa: E402
from workloads.datasets.photos import write_photo_corpus  # noqa: E402

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


def prepare_codec_limit(paths: list[str], size: int, quality: int) -> float:
    """images/s of one process doing exactly `prepare`'s per-image calls and nothing else."""
    started = time.perf_counter()
    for path in paths:
        with open(path, "rb") as handle:
            pixels = codec.decode_resize_center_crop(handle.read(), size)
        codec.encode_jpeg(pixels, quality)
    return len(paths) / (time.perf_counter() - started)


def feed_codec_limit(files: list[str], size: int, images: int) -> float:
    """images/s of one process decoding the shards' JPEGs as the feed does (into a batch)."""
    blobs = []
    for file in files:
        blobs += pq.read_table(file, columns=["image"]).column("image").to_pylist()
        if len(blobs) >= images:
            break
    out = np.empty((len(blobs), size, size, 3), np.uint8)
    started = time.perf_counter()
    for i, data in enumerate(blobs):
        codec.decode_jpeg(data, out=out[i])
    return len(blobs) / (time.perf_counter() - started)


class ShardDataset(torch.utils.data.IterableDataset):
    """The DataLoader baseline: each worker reads its share of the shards' row batches."""

    def __init__(self, files: list[str], encoding: str = "jpeg", image_size: int = 0):
        self.files, self.encoding, self.image_size = files, encoding, image_size

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        units = [(f, g) for f in self.files for g in range(pq.ParquetFile(f).num_row_groups)]
        shape = (self.image_size, self.image_size, 3)
        for file, group in units[worker::workers]:
            table = pq.ParquetFile(file).read_row_group(group, columns=["id", "label", "image"])
            labels, ids = table.column("label").to_numpy(), table.column("id").to_numpy()
            for data, label, image_id in zip(table.column("image").to_pylist(), labels, ids):
                if self.encoding == "raw":
                    image = np.frombuffer(data, np.uint8).reshape(shape).copy()
                else:
                    image = codec.decode_jpeg(data)
                yield torch.from_numpy(image), int(label), int(image_id)


def epoch_of(prepared, reads: int):
    """`prepared` whose training split lists its shards `reads` times: one pass over it is an
    epoch of `reads` x the corpus."""
    shards = prepared.manifest.shards
    train = {**shards, "train": shards["train"] * reads}
    return dataclasses.replace(
        prepared, manifest=dataclasses.replace(prepared.manifest, shards=train)
    )


def interleaved(feeds: dict, passes: int) -> tuple[dict[str, list[float]], dict[str, list]]:
    """images/s of each full pass over the data of each feed (`make_batches(epoch)`, epochs
    from 1), one pass of each feed in turn; and the seconds to each pass's first batch."""
    rates: dict[str, list[float]] = {name: [] for name in feeds}
    starts: dict[str, list[float]] = {name: [] for name in feeds}
    for epoch in range(1, passes + 1):
        for name, make_batches in feeds.items():
            started, count = time.perf_counter(), 0
            for images in make_batches(epoch):
                if not count:
                    starts[name].append(time.perf_counter() - started)
                count += len(images)
            rates[name].append(count / (time.perf_counter() - started))
    return rates, starts


def later(rates: list[float]) -> float:
    """The mean of the passes after the first (which warms up)."""
    return float(np.mean(rates[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4000, help="training images in the corpus")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs for Ray = DataLoader workers")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--passes", type=int, default=4, help="feed passes; the first warms up")
    parser.add_argument(
        "--epoch-reads", type=int, default=4, help="a feed's pass reads the corpus this many times"
    )
    parser.add_argument(
        "--baseline-images", type=int, default=1500, help="files the single-process loops time"
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

    def prepare(source: Path, name: str, encoding: str = "jpeg"):
        out = args.work_dir / name
        shutil.rmtree(out, ignore_errors=True)  # time a full preparation, not a no-op
        return run_prepare(
            PrepareConfig(
                root=str(source),
                out=str(out),
                image_size=args.image_size,
                jpeg_quality=args.quality,
                encoding=encoding,
            )
        )

    # Warm the Ray workers up first (process start and imports, ~2 s here): what is timed is the
    # per-image cost of a long run, not the cluster's start-up.
    warmup = write_photo_corpus(args.work_dir / "photos-warmup", NUM_CLASSES, 2, 1)
    prepare(warmup, "warmup")
    fixed = prepare(warmup, "warmup").seconds  # a 60-file job, warm: ~all of it fixed costs
    sample = paths[: args.baseline_images]
    # prepare and its codec limit in turn, twice, the best of each: this machine's speed varies
    # by 20% from one minute to the next
    results, limits = [], []
    for _ in range(2):
        results.append(prepare(root, "prepared"))
        limits.append(prepare_codec_limit(sample, args.image_size, args.quality))
    result = max(results, key=lambda r: r.images_per_second)
    prepare_limit = max(limits)
    prepare_per_core = result.images_per_second_per_core
    steady_per_core = result.processed / (result.seconds - fixed) / result.cpus
    pil_per_core = pil_prepare_loop(sample, args.image_size, args.quality)
    print(
        f"(a) prepare: Ray Data {result.images_per_second:.0f} images/s on {result.cpus:g} "
        f"cores = {prepare_per_core:.0f}/core; codec limit (one process, prepare's calls) "
        f"{prepare_limit:.0f}/core: {prepare_per_core / prepare_limit:.2f} of it; PIL loop "
        f"{pil_per_core:.0f}/core: ratio {prepare_per_core / pil_per_core:.2f}"
    )
    print(
        f"    less the fixed cost of a job (a 60-file prepare, warm: {fixed:.1f} s of "
        f"{result.seconds:.1f}): {steady_per_core:.0f}/core, "
        f"{steady_per_core / prepare_limit:.2f} of the codec limit"
    )

    raw_result = prepare(root, "prepared-raw", encoding="raw")
    data = epoch_of(open_prepared(str(args.work_dir / "prepared")), args.epoch_reads)
    raw = epoch_of(open_prepared(str(args.work_dir / "prepared-raw")), args.epoch_reads)
    config = DataConfig(source="prepared", root=data.uri)
    cpu = torch.device("cpu")

    def ray_feed(prepared, place: str, shuffle_rows: int = 0):
        stream = split_stream(prepared, "train", config, seed=0, decode=place == "tasks")
        feed = Feed(place, prepared.image_size, threads=decode_threads(args.cpus))
        return lambda epoch: (
            b["image"]
            for b in feed.batches(
                stream,
                args.batch_size,
                cpu,
                prefetch_batches=2,
                shuffle=shuffle_options(shuffle_rows, seed=0, epoch=epoch),
            )
        )

    def data_loader(prepared):
        loader = torch.utils.data.DataLoader(
            ShardDataset(prepared.files("train"), prepared.encoding, prepared.image_size),
            batch_size=args.batch_size,
            num_workers=args.cpus,
            persistent_workers=True,
            prefetch_factor=2,
        )
        return lambda _: (images for images, _, _ in loader)

    default = decode_place(config, "jpeg", use_gpu=False)
    shuffle_rows = DataConfig().shuffle_rows
    rates, starts = interleaved(  # one pass of each in turn: a slow spell hits them all
        {
            "worker": ray_feed(data, "worker"),
            "tasks": ray_feed(data, "tasks"),
            "dataloader": data_loader(data),
            "shuffled": ray_feed(data, default, shuffle_rows),
            "raw": ray_feed(raw, decode_place(config, "raw", use_gpu=False)),
            "raw_shuffled": ray_feed(raw, decode_place(config, "raw", use_gpu=False), shuffle_rows),
            "raw_dataloader": data_loader(raw),
        },
        args.passes,
    )
    feeds = {name: later(values) for name, values in rates.items()}
    epoch_start = {name: round(later(values), 3) for name, values in starts.items()}
    decode_limit = max(
        feed_codec_limit(data.files("train"), args.image_size, args.baseline_images)
        for _ in range(3)
    )
    loader_feed, ray_feed_rate = feeds["dataloader"], feeds[default]
    print(
        f"(b) feed, epochs of {args.epoch_reads} x {len(paths)} images: DataLoader "
        f"({args.cpus} workers) {loader_feed:.0f} images/s; codec limit "
        f"{decode_limit:.0f}/core x {args.cpus} = {decode_limit * args.cpus:.0f} "
        f"(passes {[round(r) for r in rates['dataloader']]})"
    )
    for place in ("worker", "tasks"):
        print(
            f"    Ray Data, decode in {place}{' (default)' * (place == default)}: "
            f"{feeds[place]:.0f} images/s, {feeds[place] / loader_feed:.2f} x DataLoader, "
            f"{feeds[place] / (decode_limit * args.cpus):.2f} of the codec limit "
            f"(passes {[round(r) for r in rates[place]]})"
        )
    print(
        f"(c) shuffle: the default feed through a {shuffle_rows}-image shuffle buffer "
        f"{feeds['shuffled']:.0f} images/s, {feeds['shuffled'] / ray_feed_rate:.2f} of (b) "
        f"(passes {[round(r) for r in rates['shuffled']]})"
    )
    raw_feed, raw_loader = feeds["raw"], feeds["raw_dataloader"]
    jpeg_bytes = sum(Path(f).stat().st_size for f in set(data.files("train"))) / data.count("train")
    raw_bytes = sum(Path(f).stat().st_size for f in set(raw.files("train"))) / raw.count("train")
    print(
        f"(d) raw shards: Ray Data {raw_feed:.0f} images/s, {raw_feed / loader_feed:.2f} x the "
        f"JPEG DataLoader of (b); a DataLoader on the raw shards {raw_loader:.0f} images/s "
        f"({raw_feed / raw_loader:.2f} x); prepare {raw_result.images_per_second:.0f} images/s; "
        f"{raw_bytes / 1e3:.0f} KB per image on disk vs {jpeg_bytes / 1e3:.0f} KB as JPEG "
        f"(passes {[round(r) for r in rates['raw']]}, "
        f"{[round(r) for r in rates['raw_dataloader']]}); through the shuffle buffer "
        f"{feeds['raw_shuffled']:.0f} images/s "
        f"({feeds['raw_shuffled'] / raw_feed:.2f} of it)"
    )
    print(f"    seconds to an epoch's first batch: {epoch_start}")
    print(
        json.dumps(
            {
                "prepare_of_codec_limit": round(prepare_per_core / prepare_limit, 3),
                "prepare_per_core_ratio": round(prepare_per_core / pil_per_core, 3),
                "prepare_fixed_seconds": round(fixed, 2),
                "prepare_steady_of_codec_limit": round(steady_per_core / prepare_limit, 3),
                "prepare_images_per_second": round(result.images_per_second, 1),
                "prepare_images_per_second_per_core": round(prepare_per_core, 1),
                "prepare_codec_limit_per_core": round(prepare_limit, 1),
                "pil_loop_images_per_second": round(pil_per_core, 1),
                "decode_place": default,
                "feed_ratio": round(ray_feed_rate / loader_feed, 3),
                "feed_of_codec_limit": round(ray_feed_rate / (decode_limit * args.cpus), 3),
                "feed_images_per_second": {p: round(feeds[p], 1) for p in ("worker", "tasks")},
                "feed_dataloader_images_per_second": round(loader_feed, 1),
                "feed_decode_limit_per_core": round(decode_limit, 1),
                "feed_shuffled_images_per_second": round(feeds["shuffled"], 1),
                "raw_feed_images_per_second": round(raw_feed, 1),
                "raw_feed_ratio": round(raw_feed / loader_feed, 3),
                "raw_dataloader_images_per_second": round(raw_loader, 1),
                "raw_feed_shuffled_images_per_second": round(feeds["raw_shuffled"], 1),
                "bytes_per_image": {"jpeg": round(jpeg_bytes), "raw": round(raw_bytes)},
                "epoch_images": data.count("train") * args.epoch_reads,
                "epoch_start_seconds": epoch_start,
                "shuffle_rows": shuffle_rows,
                "images": len(paths),
                "cpus": args.cpus,
                "image_size": args.image_size,
            }
        )
    )


if __name__ == "__main__":
    main()
