"""Configs: YAML + --set overrides into typed sections; bad input fails before any Ray work."""

import subprocess
import sys

import pytest
import yaml

from orchestrator.common.errors import ConfigError
from orchestrator.common.paths import CONFIGS, DEMO_CONFIG, REPO_ROOT
from orchestrator.common.yaml_config import flatten
from orchestrator.config.experiment import load_config


def test_builtin_defaults_are_the_paper_recipe():
    config = load_config()
    assert config.model.variant == "paper" and config.model.input_size == 224
    assert (config.optim.lr, config.optim.momentum, config.optim.weight_decay) == (0.01, 0.9, 5e-4)
    assert config.train.global_batch_size == 128 and config.prepare.image_size == 256


def test_every_yaml_in_configs_loads():
    paths = sorted(CONFIGS.glob("*.yaml"))
    assert DEMO_CONFIG in paths
    for path in paths:
        load_config(path)


def test_overrides_are_parsed_as_yaml():
    config = load_config(
        DEMO_CONFIG,
        ["model.lrn=off", "model.dropout=0.3", "train.epochs=7", "model.towers=1", "name=x y"],
    )
    assert config.model.lrn is False and config.model.dropout == 0.3
    assert config.train.epochs == 7 and config.model.towers == 1 and config.name == "x y"
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0  # an int where a float is wanted


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.towers=3", "model.towers: got 3; allowed: 1, 2 or null"),
        ("model.foo=1", "unknown key 'model.foo'; allowed keys in model: variant, num_classes"),
        ("bogus=1", "unknown key 'bogus'"),
        ("model.activation=gelu", "model.activation: got 'gelu'; allowed: 'relu', 'tanh'"),
        ("model.dropout=1.5", "model.dropout: got 1.5; allowed: 0 <= dropout < 1"),
        ("train.epochs=two", "train.epochs: got 'two'; allowed: an integer"),
        ("train.epochs=0", "train.epochs: got 0; allowed: an integer >= 1"),
        ("data.synthetic.num_classes=1", "data.synthetic.num_classes: got 1; allowed: 2..64"),
        ("train.global_batch_size=63", "train.global_batch_size: got 63; allowed: a multiple of"),
        ("prepare.image_size=48", "prepare.image_size: got 48; allowed: >= model.input_size (56)"),
        (
            "data.source=tfrecords",
            "data.source: got 'tfrecords'; allowed: 'prepared', 'imagefolder'",
        ),
        ("model=3", "model: got 3; allowed: a mapping of ModelConfig fields"),
        ("model.width.x=1", "'model.width' is a value, not a section"),
        ("train.parallel=towers", "num_workers: got 2; allowed with parallel 'towers': 1"),
        ("train.parallel=pipeline", "train.parallel: got 'pipeline'; allowed: 'data', 'towers'"),
        ("data.decode=gpu", "data.decode: got 'gpu'; allowed: 'auto', 'tasks', 'worker', 'device'"),
    ],
)
def test_bad_values_name_the_field_and_the_allowed_values(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(DEMO_CONFIG, [override])
    assert message in str(error.value)


def test_the_tower_split_needs_a_two_tower_net():
    with pytest.raises(ConfigError, match="model.towers is 1: allowed with it: 'data'"):
        load_config(DEMO_CONFIG, ["train.parallel=hybrid", "model.towers=1"])
    assert load_config(DEMO_CONFIG, ["train.parallel=towers", "train.num_workers=1"])


def test_flatten_gives_one_param_per_leaf():
    flat = flatten(load_config(DEMO_CONFIG))
    assert flat["model.width"] == 0.25 and flat["data.synthetic.num_classes"] == 10
    assert not any(isinstance(v, dict) for v in flat.values())


def test_a_training_runs_params_are_its_own_sections_only():
    """Every field of the sections a training run is made of, the model's resolved geometry
    among them; none of the sweep's, the study's or the serving commands' (a training run once
    logged every study.ablations.* field as a param)."""
    from orchestrator.common.paths import STUDY_CONFIG
    from orchestrator.config.experiment import training_params

    config = load_config(STUDY_CONFIG)
    params = training_params(config)
    sections = {key.split(".")[0] for key in params}
    assert sections == {"name", "seed", "model", "data", "prepare", "optim", "train", "tracking"}
    assert params["model.width"] == 0.25 and params["train.epochs"] == config.train.epochs
    assert params["model.towers"] == 2  # resolved from the paper variant
    assert set(flatten(config)) - set(params) == {
        key
        for key in flatten(config)
        if key.startswith(("sweep.", "study.", "inference.", "serve.", "predict."))
    }


def test_bad_config_fails_before_ray_starts(monkeypatch, capsys):
    from orchestrator.common import ray_cluster as cluster
    from orchestrator.run import main

    def no_ray():
        raise AssertionError("Ray was started")

    monkeypatch.setattr(cluster, "ensure_ray", no_ray)
    for args, field in (
        (["train", "--set", "model.towers=3"], "model.towers"),
        (["--set", "model.nonsense=1"], "model.nonsense"),
        (["train"], "data.root: required"),  # the paper recipe needs a dataset folder
        (["prepare", "--root", "/data"], "prepare.out: required"),
        (
            ["study", "--set", "study.ablations={x: {overrides: {model.nope: 1}}}"],
            "study.ablations.x.overrides: unknown key 'model.nope'",
        ),
        (["study", "--set", "study.ablations.tanh.measure=slow"], "study.ablations.tanh.measure"),
        (["study", "--set", "train.ten_crop=false"], "train.ten_crop: false"),
        (
            ["prepare", "--root", "/nonexistent", "--out", "/tmp/x"],
            "prepare.root: got /nonexistent",
        ),
    ):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert field in err and "Traceback" not in err


def test_help_and_config_errors_import_neither_torch_nor_ray():
    """The script as a user runs it (the one subprocess test of the command line): its help, a
    command's help and a config error answer without waiting for torch, Ray or MLflow."""
    for args, status in (
        (["--help"], 0),
        (["--version"], 0),
        (["sweep", "--help"], 0),
        (["sweep", "--set", "sweep.search=grid"], 2),
    ):
        command = [sys.executable, "-X", "importtime", "orchestrator/run.py", *args]
        ran = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert ran.returncode == status, ran.stderr[-2000:]
        imported = {line.rsplit("|", 1)[-1].strip() for line in ran.stderr.splitlines()}
        assert not {"torch", "ray", "mlflow"} & imported, (args, sorted(imported))
        if args == ["--help"]:
            assert "pyarrow" not in imported
            assert all(name in ran.stdout for name in ("demo", "train", "prepare", "evaluate"))
        grid_error = "sweep.space.optim.lr: a loguniform range cannot be searched on a grid"
        assert status == 0 or grid_error in ran.stderr


def test_help_describes_every_command_and_option(capsys):
    from orchestrator.run import parse_args

    for command in (
        "demo",
        "train",
        "prepare",
        "evaluate",
        "describe",
        "figures",
        "neighbors",
        "study",
        "report",
        "config",
    ):
        with pytest.raises(SystemExit) as exit_status:
            parse_args([command, "--help"])
        assert exit_status.value.code == 0
        sub = capsys.readouterr().out
        assert "--set" in sub and "KEY=VALUE" in sub
        expected = {
            "evaluate": ("--model", "--ten-crop"),
            "prepare": ("--source", "--root", "--out"),
            "figures": ("--model", "--out"),
            "neighbors": ("--model", "--count", "--out", "IMAGE"),
            "study": ("--config", "--resume", "--dry-run"),
            "report": ("--sweep", "--study"),
            "config": ("--config", "--fields"),
            "train": ("--config", "--dry-run"),
            "demo": ("--config", "--dry-run"),
        }
        for option in expected.get(command, ("--config",)):
            assert option in sub, (command, option)


def test_describe_prints_the_papers_totals(capsys):
    from orchestrator.run import main

    assert main(["describe", "--set", "model.variant=paper"]) == 0
    out = capsys.readouterr().out
    assert "60,965,224" in out
    assert "multiply-adds per image: 0.724 G" in out
    assert "conv2    features.4     256x27x27             307,456" in out
    assert main(["describe", "--set", "model.variant=torchvision"]) == 0
    assert "61,100,840" in capsys.readouterr().out


def test_a_config_names_its_base_and_holds_only_what_differs(tmp_path):
    derived = tmp_path / "derived.yaml"
    derived.write_text(f"base: {DEMO_CONFIG}\ntrain:\n  epochs: 9\nmodel: {{dropout: 0.3}}\n")
    demo, config = load_config(DEMO_CONFIG), load_config(derived)
    assert config.train.epochs == 9 and config.model.dropout == 0.3
    assert config.model.width == demo.model.width == 0.25  # merged key by key
    assert config.train.num_workers == demo.train.num_workers
    assert load_config(derived, ["train.epochs=2"]).train.epochs == 2  # --set still wins

    sweep = yaml.safe_load((CONFIGS / "sweep.yaml").read_text())
    assert sweep["base"] == "demo.yaml" and not {"model", "prepare", "optim"} & set(sweep)

    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"base: a.yaml is this file or derives from it"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"config file .*nowhere.yaml does not exist"):
        load_config(tmp_path / "c.yaml")


def test_config_prints_the_resolved_config_and_every_field(capsys):
    """`config` shows what will run: the file, its base and every --set merged, secrets masked;
    `config --fields` lists every field of every section's dataclass, each with its allowed
    values, default and meaning."""
    import dataclasses
    import typing

    import yaml

    from orchestrator.config.experiment import ExperimentConfig
    from orchestrator.run import main

    secret = "http://bob:hunter2@127.0.0.1:5000"
    sets = ["--set", "optim.lr=.02", "--set", f"tracking.uri={secret}"]
    assert main(["config", "--config", "configs/sweep.yaml", *sets]) == 0
    printed = capsys.readouterr().out
    shown = yaml.safe_load(printed)
    assert shown["optim"]["lr"] == 0.02  # the override
    assert shown["tracking"]["experiment"] == "alexnet-sweeps"  # sweep.yaml
    assert shown["model"]["width"] == 0.25  # its base, demo.yaml
    assert shown["sweep"]["space"]["optim.lr"] == {"loguniform": [0.002, 0.1]}
    assert "hunter2" not in printed and shown["tracking"]["uri"] == "http://bob:***@127.0.0.1:5000"

    def leaves(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[item.name]):
                yield from leaves(hints[item.name], f"{prefix}{item.name}.")
            else:
                yield f"{prefix}{item.name}"

    assert main(["config", "--fields"]) == 0
    blocks = capsys.readouterr().out.split("\n")
    keys = [line for line in blocks if line and not line.startswith(" ")]
    assert keys == list(leaves(ExperimentConfig)) and len(keys) > 90
    entry = blocks[
        blocks.index("train.resume_unrecorded") : blocks.index("train.resume_unrecorded") + 4
    ]
    assert entry[1:3] == ["  allowed: true/false (on/off)", "  default: false"]
    assert "no MLflow run of this name records" in entry[3]
    assert blocks[blocks.index("model.activation") + 1] == "  allowed: 'relu', 'tanh'"
    assert all(blocks[blocks.index(key) + 3].startswith("  ") for key in keys)  # a meaning each
