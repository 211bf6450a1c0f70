"""Two commands at once on one machine: a `train` (the demo config, 2 workers of 0.75 CPU) and a
`sweep` (2 trials of 0.7 CPU, fifo, both at a time) started 2 s apart, on the machine's one
shared local Ray (the default) against each on a Ray of its own (`RAY_ADDRESS=local`, how
commands ran before), each of which counts every CPU of the machine as its own.

Reports each command's wall time, the pair's (until both ended) and the training's images/s per
epoch (from MLflow); `ratio` is the rival Rays' pair time / the shared Ray's. A small generated
dataset (5 classes, 400 training images of 64 px), prepared once; everything in a temporary
folder. The last output line is one JSON object.

    python benchmarks/side_by_side.py [--epochs 3] [--width 0.125]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlflow.tracking import MlflowClient  # noqa: E402

from orchestrator.common.paths import REPO_ROOT  # noqa: E402
from workloads.datasets.synthetic import SyntheticConfig, generate  # noqa: E402

RUN = [sys.executable, str(REPO_ROOT / "orchestrator" / "run.py")]


def pair(folder: Path, prepared: Path, mode: str, epochs: int, width: float) -> dict:
    """The training and the sweep started 2 s apart in `mode` (shared | rival)."""
    where = folder / mode
    settings = [
        "data.source=prepared",
        f"data.root={prepared}",
        f"train.storage_path={where / 'results'}",
        f"tracking.uri=sqlite:///{where / 'mlflow.db'}",
        "tracking.figures=false",
        "train.global_batch_size=32",
        f"model.width={width}",
        f"train.epochs={epochs}",
    ]
    sets = [part for setting in settings for part in ("--set", setting)]
    commands = {
        "train": ["train", "--config", "demo", *sets, "--set", "name=beside"],
        "sweep": ["sweep", "--config", "sweep", *sets]
        + ["--set", "sweep.num_samples=2", "--set", "sweep.scheduler=fifo"],
    }
    env = {**os.environ, "ALEXNET_RAY_HOME": str(folder / "home")}
    env["RAY_ADDRESS"] = "local" if mode == "rival" else ""
    where.mkdir()
    started, processes, seconds = time.monotonic(), {}, {}
    for name, args in commands.items():
        log = open(where / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        processes[name] = subprocess.Popen(RUN + ["-q", *args], env=env, stdout=log, stderr=log)
        time.sleep(2)
    for name, process in processes.items():
        if process.wait() != 0:
            raise SystemExit(f"{mode} {name} failed: see {where / (name + '.log')}")
        seconds[name] = round(time.monotonic() - started, 1)
    client = MlflowClient(f"sqlite:///{where / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("alexnet-demo").experiment_id])
    history = client.get_metric_history(run.info.run_id, "images_per_second")
    return {
        "seconds": seconds,
        "pair_seconds": max(seconds.values()),
        "train_images_per_second": [round(m.value) for m in sorted(history, key=lambda m: m.step)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--width", type=float, default=0.125)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        data = SyntheticConfig(num_classes=5, train_per_class=80, val_per_class=20, seed=7)
        root = generate(folder / "synthetic", data)
        prepared = folder / "prepared"
        prepare = RUN + ["-q", "prepare", "--root", str(root), "--out", str(prepared)]
        prepare += ["--set", "prepare.image_size=64"]
        env = {**os.environ, "RAY_ADDRESS": "local"}
        subprocess.run(prepare, env=env, check=True, stdout=subprocess.DEVNULL)
        found = {
            mode: pair(folder, prepared, mode, args.epochs, args.width)
            for mode in ("shared", "rival")
        }
    found["ratio"] = round(found["rival"]["pair_seconds"] / found["shared"]["pair_seconds"], 2)
    for mode in ("shared", "rival"):
        print(f"{mode}: {found[mode]}", file=sys.stderr)
    print(json.dumps(found))


if __name__ == "__main__":
    main()
