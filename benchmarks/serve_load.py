"""What serving costs: a model with fixed random weights (`--model demo`: the demo's
quarter-width AlexNet, 64 px prepared, 56 px crops, 10 classes; `paper`: the paper's 61 M
parameters, 256 px, 224 px crops, 1,000 classes) behind `serve` (Ray Serve on 127.0.0.1) and
`predict` (Ray Data), against the same work in a plain loop in this process.

- serve: JPEG requests (4:3, the short side 2.3x the prepared size, decoded and resized by the
  replica) at concurrency 1, 8 and 32, with Ray Serve's batching on (`max_batch_size` 16) and
  off (1): images/s and p50 / p99 latency; the baseline decodes the same files and runs the
  same forward passes in batches of 16 here, and `ratio` is served images/s / baseline
  images/s.
- predict: `predict_folder` over a folder of the same kind of JPEGs against a loop that reads,
  decodes and predicts them here in batches of `predict.batch_size`.

Bounded: a fixed number of requests per point, loopback only, a local Ray of its own. The last
output line is one JSON object.

    python benchmarks/serve_load.py [--model demo|paper] [--requests 256] [--files 512]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import ray  # noqa: E402
import requests  # noqa: E402
import torch  # noqa: E402
from ray import serve  # noqa: E402

from orchestrator.config.serve import PredictConfig, ServeConfig  # noqa: E402
from orchestrator.serving.batch import predict_folder  # noqa: E402
from orchestrator.serving.model import OpenedModel  # noqa: E402
from orchestrator.serving.service import start_service  # noqa: E402
from workloads.alexnet.config import ModelConfig  # noqa: E402
from workloads.alexnet.model import build_model  # noqa: E402
from workloads.alexnet.predictor import Predictor, PredictorSpec  # noqa: E402
from workloads.datasets.codec import encode_jpeg  # noqa: E402

MODELS = {  # name: (the model, its prepared size)
    "demo": (ModelConfig(input_size=56, width=0.25, stem_stride=2, num_classes=10), 64),
    "paper": (ModelConfig(num_classes=1000), 256),  # 61 M parameters, 224 px crops of 256 px
}
CONCURRENCY = (1, 8, 32)
BATCH = 16  # the served batch (max_batch_size) and the baseline's


def make_predictor(name: str) -> Predictor:
    """The model `name` with fixed random weights and a random mean image."""
    model, size = MODELS[name]
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    classes = tuple(f"class-{i}" for i in range(model.num_classes))
    spec = PredictorSpec(model=model, prepared_size=size, classes=classes)
    mean = rng.random((size, size, 3)).astype(np.float32)
    return Predictor(spec, build_model(model).state_dict(), mean)


def jpegs(count: int, size: int) -> list[bytes]:
    """Photo-like JPEGs (smooth noise, 4:3, the short side 2.3x the prepared size, quality 90)."""
    rng = np.random.default_rng(1)
    block = max(1, round(2.3 * size / 15))
    out = []
    for _ in range(count):
        small = rng.integers(0, 256, (15, 20, 3), dtype=np.uint8)
        pixels = np.kron(small, np.ones((block, block, 1), np.uint8))
        out.append(encode_jpeg(pixels, quality=90))
    return out


def baseline(predictor: Predictor, files: list[bytes], batch: int) -> float:
    """Images/s of decode + resize + forward in batches of `batch`, here, after one warm-up."""
    predictor.top(np.stack([predictor.image(f) for f in files[:batch]]))
    started = time.perf_counter()
    for i in range(0, len(files), batch):
        predictor.top(np.stack([predictor.image(f) for f in files[i : i + batch]]))
    return len(files) / (time.perf_counter() - started)


def load(url: str, files: list[bytes], concurrency: int, requests_count: int) -> dict:
    """`requests_count` POSTs of `files` (round robin) at `concurrency`: images/s, latencies."""

    sessions = threading.local()  # one keep-alive connection per client thread

    def one(i: int) -> float:
        if not hasattr(sessions, "session"):
            sessions.session = requests.Session()
        started = time.perf_counter()
        answer = sessions.session.post(
            url, data=files[i % len(files)], headers={"Content-Type": "image/jpeg"}, timeout=60
        )
        answer.raise_for_status()
        return time.perf_counter() - started

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm-up
        started = time.perf_counter()
        latencies = sorted(pool.map(one, range(requests_count)))
        seconds = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "images_per_second": requests_count / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=256, help="per concurrency and setting")
    parser.add_argument("--files", type=int, default=512, help="predict's folder")
    parser.add_argument("--model", choices=sorted(MODELS), default="demo")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a replica with one CPU has it
    predictor = make_predictor(args.model)
    model = OpenedModel("benchmark", predictor, {})
    size = MODELS[args.model][1]
    files = jpegs(64, size)
    here = baseline(predictor, files * max(1, args.requests // 64), BATCH)
    print(f"baseline: {here:.0f} images/s (decode, resize, forward in batches of {BATCH})")

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serving = []
    for max_batch_size in (BATCH, 1):
        config = ServeConfig(port=port, max_batch_size=max_batch_size, num_cpus_per_replica=1)
        url = start_service(model, config)
        for concurrency in CONCURRENCY:
            point = load(url, files, concurrency, args.requests)
            point.update(batching=max_batch_size > 1, ratio=point["images_per_second"] / here)
            serving.append(point)
            print(
                f"serve, batching {'on ' if point['batching'] else 'off'}, concurrency "
                f"{concurrency:>2}: {point['images_per_second']:6.0f} images/s, p50 "
                f"{point['p50_ms']:6.1f} ms, p99 {point['p99_ms']:6.1f} ms, "
                f"{point['ratio']:.2f}x the loop here"
            )
    serve.shutdown()

    settings = PredictConfig()
    with tempfile.TemporaryDirectory() as folder:
        photos = Path(folder) / "photos"
        photos.mkdir()
        for i, data in enumerate(jpegs(args.files, size)):
            (photos / f"{i:05d}.jpg").write_bytes(data)
        paths = sorted(photos.iterdir())
        batch = settings.batch_size
        started = time.perf_counter()  # read, decode, resize, forward, in this process
        for i in range(0, len(paths), batch):
            predictor.top(np.stack([predictor.image(p.read_bytes()) for p in paths[i : i + batch]]))
        local_seconds = time.perf_counter() - started
        done = predict_folder(model, str(photos), f"{folder}/out", settings, False, False)
    batch_rate = done.images / done.seconds
    print(
        f"predict: {done.images} files in {done.seconds:.1f} s ({batch_rate:.0f} images/s, "
        f"actor start included) against {len(paths) / local_seconds:.0f} images/s in a loop "
        f"here: {batch_rate / (len(paths) / local_seconds):.2f}x"
    )
    print(
        json.dumps(
            {
                "baseline_images_per_second": here,
                "serve": serving,
                "predict_images_per_second": batch_rate,
                "predict_loop_images_per_second": len(paths) / local_seconds,
                "predict_ratio": batch_rate / (len(paths) / local_seconds),
                "model": args.model,
                "cpus": ray.cluster_resources().get("CPU"),
                "torch_threads": 1,
            }
        )
    )


if __name__ == "__main__":
    main()
