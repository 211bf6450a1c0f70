"""Peak memory of `prepare` on 1x and 10x the images: streaming means it must not grow.

Runs `orchestrator/run.py prepare` (its own local Ray) on a generated ImageNet-like corpus of N
and of 10 N training images, sampling every 0.1 s the resident memory (RSS, from /proc; Linux)
of the whole process tree: the driver, Ray's own processes and the Ray Data workers. Reports
the peak of the tree, of the driver and of the largest single process; the last output line is
one JSON object with the 10x/1x ratios.

    python benchmarks/prepare_memory.py [--images 400]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workloads.datasets.photos import write_photo_corpus  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
NUM_CLASSES = 20


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
    return pids


def measure(root: Path, out: Path, tracking_db: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "RAY_ADDRESS": ""}  # a fresh local Ray: its processes are in the tree
    env.pop("RAY_ADDRESS")
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "orchestrator" / "run.py"),
            "prepare",
            "--root",
            str(root),
            "--out",
            str(out),
            "--set",
            f"tracking.uri=sqlite:///{tracking_db}",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peak_tree = peak_driver = peak_single = 0
    started = time.monotonic()
    while process.poll() is None:
        sizes = [_rss_bytes(pid) for pid in _tree(process.pid)]
        peak_tree = max(peak_tree, sum(sizes))
        peak_driver = max(peak_driver, sizes[0] if sizes else 0)
        peak_single = max(peak_single, max(sizes, default=0))
        time.sleep(0.1)
    output = process.stdout.read()
    if process.returncode != 0:
        raise SystemExit(f"prepare failed:\n{output[-3000:]}")
    return {
        "seconds": time.monotonic() - started,
        "peak_tree_mb": peak_tree / 2**20,
        "peak_driver_mb": peak_driver / 2**20,
        "peak_single_process_mb": peak_single / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400, help="training images at 1x")
    parser.add_argument("--work-dir", type=Path, default=Path("data/bench"))
    args = parser.parse_args()
    results = {}
    for scale in (1, 10):
        per_class = args.images * scale // NUM_CLASSES
        root = write_photo_corpus(
            args.work_dir / f"photos-{per_class * NUM_CLASSES}", NUM_CLASSES, per_class, 5
        )
        results[scale] = measure(root, args.work_dir / "memory-out", args.work_dir / "memory.db")
        r = results[scale]
        print(
            f"{scale:>2}x ({per_class * NUM_CLASSES} images): {r['seconds']:.0f} s, peak RSS: "
            f"process tree {r['peak_tree_mb']:.0f} MB, driver {r['peak_driver_mb']:.0f} MB, "
            f"largest process {r['peak_single_process_mb']:.0f} MB"
        )
    ratios = {
        f"{key.removesuffix('_mb')}_ratio": round(results[10][key] / results[1][key], 3)
        for key in ("peak_tree_mb", "peak_driver_mb", "peak_single_process_mb")
    }
    print(json.dumps({**ratios, "images_1x": args.images, "results": results}))


if __name__ == "__main__":
    main()
