#!/usr/bin/env bash
# The GPU numbers, one command away, on a machine with a CUDA GPU and only torch, torchvision,
# numpy, pillow and pytest (no Ray, no MLflow, no network): in at most 6 minutes it runs
#   1. benchmarks/gpu_throughput.py  the paper's AlexNet training step: fp32, bf16 +
#      channels_last, + torch.compile; batch 128 to 1024; images/s and TFLOP/s (on-device
#      augmentation included); new measurements stop after 200 s
#   2. benchmarks/gpu_decode.py      nvJPEG batch decode of generated 256 px JPEGs vs one CPU core
#   3. tests/gpu                     the checks that need a CUDA device
# and writes ONE file, OUT_FOLDER/device_check.json: each step's exit status, its JSON report
# (the last line of its output) and the end of its output. Copy the repository (or just
# benchmarks/, workloads/ and tests/gpu/) to the machine and run:
#
#   bash benchmarks/device_check.sh OUT_FOLDER          # on the GPU machine
#   bash benchmarks/device_check.sh OUT_FOLDER --cpu    # dry run: the same steps, tiny, on a CPU
#
# PYTHON picks the interpreter (default python3). `capacity --measured OUT_FOLDER/
# device_check.json` plans a cluster from the result.
set -uo pipefail

out=${1:?usage: benchmarks/device_check.sh OUT_FOLDER [--cpu]}
mode=${2:-gpu}
python=${PYTHON:-python3}
cd "$(dirname "$0")/.." || exit 1
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() {  # step NAME SECONDS COMMAND...: run with a time limit; output and status under $work
    local name=$1 limit=$2
    shift 2
    echo "== $name: $* (at most ${limit} s)"
    timeout "$limit" "$@" >"$work/$name.log" 2>&1
    echo $? >"$work/$name.rc"
    tail -n 15 "$work/$name.log"
}

if [ "$mode" = "--cpu" ]; then
    step throughput 240 "$python" benchmarks/gpu_throughput.py --tiny
    step decode 60 "$python" benchmarks/gpu_decode.py --cpu
else
    step throughput 260 "$python" benchmarks/gpu_throughput.py --budget 200
    step decode 45 "$python" benchmarks/gpu_decode.py
fi
step tests 45 "$python" -m pytest tests/gpu -q -p no:cacheprovider --noconftest

"$python" - "$work" "$out/device_check.json" "$mode" <<'EOF'
import json, platform, sys
from pathlib import Path

work, target, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
report = {"mode": "cpu dry run" if mode == "--cpu" else "gpu", "python": platform.python_version()}
for name in ("throughput", "decode", "tests"):
    log = (work / f"{name}.log").read_text(errors="replace").splitlines()
    result = {"exit_status": int((work / f"{name}.rc").read_text()), "output_tail": log[-15:]}
    try:
        result["report"] = json.loads(log[-1]) if name != "tests" else None
    except (IndexError, ValueError):
        result["report"] = None
    if name == "tests":
        result["summary"] = next((line for line in reversed(log) if " in " in line), None)
    report[name] = result
decode = report["decode"]["report"] or {}
report["torch"] = decode.get("torch")
report["gpu"] = decode.get("device") if decode.get("gpu_images_per_second") else None
target.write_text(json.dumps(report, indent=1))
print(f"wrote {target}")
EOF
