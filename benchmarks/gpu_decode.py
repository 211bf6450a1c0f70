"""JPEG decode throughput of prepared-size images: nvJPEG on the GPU (the `device` decode place)
against one CPU core (the `tasks` and `worker` places), on JPEGs this script generates.

The images: photo-like (1/f texture, objects, lighting; workloads/datasets/synthetic.py), S x S
(default 256, `prepare`'s size), quality 90, 4:2:0, as `prepare` writes them. GPU: batches of
64 to 1024 decoded in one `decode_batch` call (TorchCodec's batched nvJPEG; torchvision's where
TorchCodec is not installed, as on the GPU machine's image) each, synchronised, images/s after a
warm-up. CPU: one thread, `decode_batch`'s libjpeg-turbo decode (key "torchvision", kept for
the figures already recorded), and `simplejpeg` (the codec the feed uses) when it is installed.
Needs torch, torchvision, numpy and pillow only.
The last output line is one JSON object.

    python benchmarks/gpu_decode.py            # on a CUDA machine
    python benchmarks/gpu_decode.py --cpu      # the CPU figures only (a smoke run)
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from workloads.datasets.batch_decode import decode_batch  # noqa: E402
from workloads.datasets.photos import PhotoSynth  # noqa: E402


def make_jpegs(count: int, size: int, quality: int, textures: int = 12) -> list[bytes]:
    synth, files = PhotoSynth(seed=0, bank_size=textures), []
    for i in range(count):
        buffer = io.BytesIO()
        synth.render(np.random.default_rng([7, i]), size, size).save(
            buffer, format="JPEG", quality=quality
        )
        files.append(buffer.getvalue())
    return files


def rate(work, images: int, repeats: int, sync=lambda: None) -> float:
    """images/s of `work()`, the best of `repeats` after one warm-up call."""
    work()
    sync()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        sync()
        best = min(best, time.perf_counter() - started)
    return images / best


def cpu_rates(jpegs: list[bytes], tensors: list[torch.Tensor], repeats: int) -> dict:
    torch.set_num_threads(1)
    rates = {"torchvision": rate(lambda: decode_batch(tensors, "cpu"), len(jpegs), repeats)}
    try:
        import simplejpeg
    except ImportError:
        return rates
    rates["simplejpeg"] = rate(
        lambda: [simplejpeg.decode_jpeg(j, colorspace="RGB") for j in jpegs], len(jpegs), repeats
    )
    return rates


def gpu_rates(tensors: list[torch.Tensor], batch_sizes: list[int], repeats: int) -> dict:
    device = torch.device("cuda")
    sync = lambda: torch.cuda.synchronize(device)  # noqa: E731
    rates = {}
    for batch in batch_sizes:
        chunk = (tensors * (-(-batch // len(tensors))))[:batch]
        rates[str(batch)] = rate(lambda: decode_batch(chunk, device), batch, repeats, sync)
        print(f"nvJPEG batch {batch:>5}: {rates[str(batch)]:>9.0f} images/s", flush=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="CPU figures only, few images")
    parser.add_argument("--images", type=int, default=256, help="distinct JPEGs generated")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.cpu:
        args.images, args.repeats = min(args.images, 16), 2
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --cpu for the CPU figures")

    jpegs = make_jpegs(args.images, args.image_size, args.quality, 2 if args.cpu else 12)
    tensors = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
    report = {
        "image_size": args.image_size,
        "quality": args.quality,
        "bytes_per_image": round(float(np.mean([len(j) for j in jpegs]))),
        "cpu_images_per_second_per_core": cpu_rates(jpegs, tensors, args.repeats),
        "gpu_images_per_second": None,
        "device": "CPU",
        "torch": torch.__version__,
    }
    for codec, value in report["cpu_images_per_second_per_core"].items():
        print(f"CPU, one core, {codec}: {value:.0f} images/s")
    if not args.cpu:
        report["device"] = torch.cuda.get_device_name()
        report["gpu_images_per_second"] = gpu_rates(tensors, args.batch_sizes, args.repeats)
        exact = decode_batch(tensors[:16], "cpu")
        on_gpu = decode_batch(tensors[:16], "cuda").cpu()
        difference = (exact.int() - on_gpu.int()).abs()
        report["gpu_vs_cpu_pixels"] = {
            "mean_abs": difference.float().mean().item(),
            "max_abs": difference.max().item(),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
