"""Bad input ends in one line (`config error: ...` / `error: ...`), exit status 2, no traceback,
before Ray starts: the table of bad inputs in docs/troubleshooting.md, row by row, through
`run.py`'s `main`."""

import json
import re

import numpy as np
import pytest
import torch

from orchestrator.common.paths import DEMO_CONFIG
from orchestrator.common.yaml_config import to_yaml
from orchestrator.config.experiment import load_config
from orchestrator.run import main

BOMB = "\n".join(
    [f"l0: &l0 [{', '.join(['x'] * 9)}]"]
    + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    + ["model: {dropout: *l8}"]
)


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """Every row fails before Ray would start: starting it fails the row (a traceback, exit 1)."""
    from orchestrator.common import ray_cluster as cluster

    def refuse():
        raise AssertionError("Ray was started")

    monkeypatch.setattr(cluster, "ensure_ray", refuse)


def _fails(capsys, *argv) -> str:
    """Runs `run.py ARGV` in-process; returns its one line of error output."""
    assert main(list(argv)) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[-2000:]
    assert "Traceback" not in out + err
    assert len(lines[0]) <= 1000
    return lines[0]


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "optim.weight_decay=.nan",
            "config error: optim.weight_decay: got nan; allowed: a finite number",
        ),
        (
            "tracking.wait_at_end_s=.nan",
            "config error: tracking.wait_at_end_s: got nan; allowed: a finite number",
        ),
        ("optim.lr=.inf", "config error: optim.lr: got inf; allowed: a finite number"),
        (
            "model.dropout=[1,2",
            "config error: --set model.dropout: value '[1,2': not valid YAML (line 1, column 5)",
        ),
        (
            "sweep.metric=accuracy",
            "config error: sweep.metric: got 'accuracy'; allowed: val_top1_error, val_top5_error",
        ),
        ("model.dropout=" + "9" * 5000, "config error: --set model.dropout: value '9999"),
        ("model.dropout=" + "9" * 400, "config error: model.dropout: got 9999"),
    ],
)
def test_bad_values(capsys, override, expected):
    line = _fails(capsys, "describe", "--set", override)
    assert line.startswith(expected), line
    assert len(line) < 300  # values are shown shortened


def test_a_yaml_alias_bomb_is_refused_in_one_short_line(capsys, tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    assert len(BOMB) < 1000
    line = _fails(capsys, "describe", "--config", str(bomb))
    assert "more than 100,000 values (nested YAML aliases?)" in line


def test_a_password_in_an_unreachable_tracking_uri_is_never_printed(capsys, tmp_path):
    line = _fails(
        capsys, "report", "--sweep", "s", "--set", "tracking.uri=http://alice:s3cret@127.0.0.1:9"
    )
    assert "s3cret" not in line and "alice:***@127.0.0.1:9" in line


def test_an_output_uri_nothing_opens_is_named_without_its_password(capsys, tmp_path):
    from workloads.datasets.synthetic import SyntheticConfig, generate

    source = generate(tmp_path / "src", SyntheticConfig(2, 1, 1))
    line = _fails(
        capsys, "prepare", "--root", str(source), "--out", "hdfs://bob:hunter2-secret@127.0.0.1:1/x"
    )
    assert line.startswith("config error: prepare.out: hdfs://bob:***@127.0.0.1:1/x: no filesystem")
    assert "hunter2" not in line


def test_train_on_a_folder_with_no_prepared_data_stops_before_ray(capsys, tmp_path):
    line = _fails(capsys, "train", "--set", f"data.root={tmp_path}")
    assert line.startswith(f"config error: data.root: {tmp_path} holds no complete prepared")


def test_evaluate_what_is_not_a_checkpoint(capsys, tmp_path):
    text = tmp_path / "hostname"
    text.write_text("myhost\n")
    line = _fails(capsys, "evaluate", "--model", str(text))
    assert line.startswith(f"error: --model: {text} is not a checkpoint written by train")
    line = _fails(capsys, "evaluate", "--model", str(tmp_path))
    assert line == f"error: --model: {tmp_path} is not a checkpoint (no checkpoint.pt)"
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    line = _fails(capsys, "evaluate", "--model", str(tmp_path / "other.pt"))
    assert "is a torch file but not a checkpoint written by train" in line


def test_evaluate_an_unknown_mlflow_run(capsys, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    line = _fails(
        capsys, "evaluate", "--model", "runs:/0123456789abcdef", "--set", f"tracking.uri={uri}"
    )
    assert line.startswith("error: --model: runs:/0123456789abcdef is not in the MLflow store")
    assert "RESOURCE_DOES_NOT_EXIST" in line


def _prepared_folder(folder, classes):
    """A prepared dataset's manifest and statistics (no shards: the check comes first)."""
    folder.mkdir()
    manifest = {
        "format": 1,
        "key": "k",
        "classes": classes,
        "rejects": 0,
        "params": {"image_size": 64, "encoding": "jpeg"},
        "images": {"train": 0, "val": 0},
        "shards": {"train": [], "val": []},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    np.savez(
        folder / "stats.npz",
        mean_image=np.zeros((64, 64, 3), np.float32),
        eigenvalues=np.ones(3),
        eigenvectors=np.eye(3),
        count=np.array(1),
    )
    return folder


def test_evaluate_on_data_with_other_classes(capsys, tmp_path):
    from workloads.alexnet.model import build_model

    trained = _prepared_folder(tmp_path / "trained", ["cat", "dog"])
    config = load_config(
        DEMO_CONFIG, ["data.source=prepared", f"data.root={trained}", "model.num_classes=2"]
    )
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save(
        {
            "epoch": 3,
            "model": build_model(config.model).state_dict(),
            "config": to_yaml(config),
            "classes": ["cat", "dog"],
        },
        checkpoint,
    )
    swapped = _prepared_folder(tmp_path / "swapped", ["dog", "cat"])
    line = _fails(capsys, "evaluate", "--model", str(checkpoint), "--set", f"data.root={swapped}")
    assert re.match(r"error: data.root: .*swapped has the same classes in another order", line)
    others = _prepared_folder(tmp_path / "others", ["cat", "dog", "eel"])
    line = _fails(capsys, "evaluate", "--model", str(checkpoint), "--set", f"data.root={others}")
    assert "has other classes (3; differing: eel)" in line
