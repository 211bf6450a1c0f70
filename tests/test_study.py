"""A study's table (experiments/ablations.py): every kind of ablation measured against the
baseline of the same seed, signs against the paper's, seeds that disagree called inconclusive;
the shipped study file is the paper's; a study stopped by Ctrl-C and resumed."""

import math

import pytest

from orchestrator.common.paths import STUDY_CONFIG
from orchestrator.config.experiment import load_config
from orchestrator.config.study import Ablation, StudyConfig
from orchestrator.experiments.ablations import Trial, format_markdown, study_rows


def test_the_shipped_study_is_the_papers():
    config = load_config(STUDY_CONFIG)
    study = config.study
    assert study.seeds >= 2 and config.train.ten_crop
    published = {
        name: (a.measure, a.paper_top1, a.paper_top5) for name, a in study.ablations.items()
    }
    assert published == {
        "no_lrn": ("val_error", 1.4, 1.2),
        "plain_pooling": ("val_error", 0.4, 0.3),
        "one_tower": ("val_error", 1.7, 1.2),
        "no_pca_noise": ("val_error", 1.0, None),
        "no_dropout": ("overfitting", None, None),
        "tanh": ("speed", 6.0, None),
        "center_crop": ("ten_crop", 1.5, 1.3),
    }
    assert study.ablations["one_tower"].overrides == {"model.towers": 1, "model.width": 0.125}
    assert study.trained() == [
        "baseline",
        "no_lrn",
        "plain_pooling",
        "one_tower",
        "no_pca_noise",
        "no_dropout",
        "tanh",
    ]


def _trial(group, seed, val1, val5=0.1, train=None, ten_crop=None, recorded_seed=None):
    history = {
        "val_top1_error": {1: 0.9, 2: val1},
        "val_top5_error": {1: 0.5, 2: val5},
        "train_top1_error": train or {1: 0.5, 2: 0.2},
    }
    if ten_crop:
        history["val_top1_error_10crop"], history["val_top5_error_10crop"] = (
            {2: ten_crop[0]},
            {2: ten_crop[1]},
        )
    return Trial(group, seed, history, recorded_seed)


def test_each_kind_of_ablation_is_measured_against_the_baseline_of_its_seed():
    study = StudyConfig(
        seeds=2,
        ablations={
            "no_lrn": Ablation({"model.lrn": False}, paper_top1=1.4, paper_top5=1.2),
            "pooling": Ablation({"model.pool": "plain"}, paper_top1=0.4),
            "crop": Ablation(measure="ten_crop", paper_top1=1.5, paper_top5=1.3),
            "dropout": Ablation({"model.dropout": 0.0}, measure="overfitting"),
            "tanh": Ablation({"model.activation": "tanh"}, measure="speed", paper_top1=6.0),
        },
    )
    tanh_curve = {1: 0.7, 2: 0.5, 3: 0.3, 4: 0.2}  # 25% at epoch 3.5; the baseline at 1 5/6
    trials = [
        _trial("baseline", 0, 0.30, 0.10, {1: 0.5, 2: 0.2, 3: 0.1, 4: 0.05}, (0.28, 0.09)),
        _trial("baseline", 1, 0.40, 0.20, {1: 0.5, 2: 0.2, 3: 0.1, 4: 0.05}, (0.37, 0.18)),
        _trial("no_lrn", 0, 0.33, 0.12),
        _trial("no_lrn", 1, 0.42, 0.21),
        _trial("pooling", 0, 0.31),
        _trial("pooling", 1, 0.39),
        _trial("dropout", 0, 0.35, train={1: 0.5, 2: 0.01}),  # gap 34 points vs 25
        _trial("dropout", 1, 0.45, train={1: 0.5, 2: 0.01}),  # gap 44 points vs 35
        _trial("tanh", 0, 0.5, train=tanh_curve),
        _trial("tanh", 1, 0.5, train=tanh_curve),
    ]
    rows = {row["ablation"]: row for row in study_rows(study, trials, classes=10)}

    no_lrn = rows["no_lrn"]  # +3 and +2 points top-1, +2 and +1 top-5
    assert no_lrn["per_seed_top1"] == [3.0, 2.0] and no_lrn["top1"] == pytest.approx(2.5)
    assert no_lrn["top1_spread"] == pytest.approx(math.sqrt(0.5))
    assert no_lrn["top5"] == pytest.approx(1.5)
    assert no_lrn["sign_agrees"] is True and no_lrn["conclusive"] is True
    pooling = rows["pooling"]  # +1 and -1: the seeds disagree
    assert pooling["top1"] == pytest.approx(0) and pooling["conclusive"] is False
    crop = rows["crop"]  # centre minus ten-crop: +2 and +3 points; +1 and +2
    assert crop["per_seed_top1"] == [2.0, 3.0] and crop["top5"] == pytest.approx(1.5)
    assert crop["sign_agrees"] is True and crop["overrides"] == "(evaluation only)"
    dropout = rows["dropout"]  # the gap grows by 9 points with either seed
    assert dropout["top1"] == pytest.approx(9) and dropout["sign_agrees"] is True
    assert dropout["conclusive"] is True  # the same sign, spread 0
    tanh = rows["tanh"]  # 3.5 / (1 + (0.5 - 0.25) / (0.5 - 0.2)) epochs
    assert tanh["top1"] == pytest.approx(3.5 / (1 + 0.25 / 0.3))
    assert tanh["sign_agrees"] is True and math.isnan(tanh["top5"])
    table = format_markdown(list(rows.values()))
    assert (
        "| no_lrn | model.lrn=False | val_error | +1.4 / +1.2 | +2.5 ± 0.7 / +1.5 ± 0.7 |" in table
    )
    assert "| tanh | model.activation=tanh | speed | 6.00x | 1.91x ± 0.0 | yes |" in table


def test_a_speed_threshold_neither_run_reaches_is_lowered_to_one_both_reach():
    study = StudyConfig(
        seeds=1, ablations={"tanh": Ablation({"model.activation": "tanh"}, measure="speed")}
    )
    trials = [
        _trial("baseline", 0, 0.3, train={1: 0.6, 2: 0.4}),  # 40% at epoch 2
        _trial("tanh", 0, 0.5, train={1: 0.8, 2: 0.6, 3: 0.5, 4: 0.4}),
    ]  # at epoch 4
    (row,) = study_rows(study, trials, classes=10)
    assert row["top1"] == pytest.approx(2.0) and row["conclusive"] is False  # one seed


def test_the_title_states_the_measured_data_and_a_study_of_evaluation_only_plots(tmp_path):
    """The table's title says what the data is by its facts (a 4-class, 160-image run was once
    titled with the shipped config's "10-class, 2,000 images") and names the trials that did not
    finish (their rows count fewer seeds); a study whose ablations only
    evaluate (ten_crop) has no validation curves to draw, and drawing them once crashed its end
    after all the training."""
    from orchestrator.experiments.study import _notes, _plots, _title

    config = load_config(STUDY_CONFIG)
    data = {
        "data.prepared_uri": "s3://bucket/prepared/pets-0a1b",
        "data.num_classes": 4,
        "data.num_train_images": 160,
        "data.num_val_images": 40,
        "data.image_size": 64,
    }
    title = _title(config, data, trials=[])
    assert "on pets-0a1b (4 classes, 160 training, 40 validation images, 64 px, 56 px" in title
    assert "10-class" not in title and "2,000" not in title
    older = {k: v for k, v in data.items() if k not in ("data.num_val_images", "data.image_size")}
    assert "(4 classes, 160 training images, 56 px crops" in _title(config, older, trials=[])

    trials = [_trial("baseline", 0, 0.3), _trial("baseline", 1, 0.3), _trial("no_lrn", 1, 0.3)]
    missing = "\nno finished trial for: "
    assert _notes(config.study, [], [], []).startswith(missing + "baseline seed 0, ")
    assert _notes(config.study, trials, [], []).startswith(missing + "no_lrn seed 0, ")
    complete = StudyConfig(seeds=2, ablations={"no_lrn": Ablation({"model.lrn": False})})
    assert _notes(complete, trials + [_trial("no_lrn", 0, 0.3)], [], []) == ""

    only_evaluation = StudyConfig(seeds=1, ablations={"crop": Ablation(measure="ten_crop")})
    _plots(only_evaluation, [_trial("baseline", 0, 0.3, ten_crop=(0.2, 0.1))], tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing to draw: no trained ablation, no speed one


def test_trials_of_other_seeds_or_epochs_are_not_compared_and_runs_trained_twice_are_named(
    tmp_path,
):
    """A resumed study once paired a seed-0 baseline with a seed-5 variant ("the same seed, sign
    agrees") and a 1-epoch baseline with a 2-epoch one; and a grid started again under its
    parent showed whichever run of a (group, seed) came last. Pairs are now checked on what
    each run recorded, and runs held twice are left out, each named under the table."""
    from orchestrator.experiments.study import _notes, trials_of
    from orchestrator.tracking import tags
    from orchestrator.tracking.config import TrackingConfig
    from orchestrator.tracking.run import TrackedRun

    study = StudyConfig(seeds=2, ablations={"no_lrn": Ablation({"model.lrn": False})})
    trials = [
        _trial("baseline", 0, 0.30, recorded_seed=0),
        _trial("no_lrn", 0, 0.35, recorded_seed=5),  # resumed with another seed
        _trial("baseline", 1, 0.30, recorded_seed=1),
        _trial("no_lrn", 1, 0.40, recorded_seed=1),
    ]
    trials[3].history["val_top1_error"] = {1: 0.40}  # trained for 1 epoch, the baseline 2
    (row,) = study_rows(study, trials, classes=10)
    assert row["seeds"] == 0 and math.isnan(row["top1"]) and row["sign_agrees"] is None
    assert row["unpaired"] == [
        "no_lrn seed 0 (seed 5 against 0)",
        "no_lrn seed 1 (1 against 2 epochs)",
    ]
    notes = _notes(study, trials, [row], [])
    assert (
        "not compared, trained with another seed or for other epochs: no_lrn seed 0 (seed 5"
        in notes
    )
    trials[1].recorded_seed = 0
    (row,) = study_rows(study, trials, classes=10)
    assert row["seeds"] == 1 and row["top1"] == pytest.approx(5.0)

    config = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", buffer_dir=str(tmp_path))
    parent = TrackedRun(config, "study-twice")
    for name, group, index in (("a", "baseline", 0), ("b", "baseline", 0), ("c", "no_lrn", 0)):
        child = TrackedRun(config, name, parent_run_id=parent.run_id)
        child.set_tags({tags.GROUP: group, tags.SEED_INDEX: str(index)})
        child.log_metrics({"val_top1_error": 0.5}, step=1)
        child.finish("FINISHED")
    found, twice = trials_of(parent.store, parent.children())
    assert [(t.group, t.seed) for t in found] == [("no_lrn", 0)] and twice == ["baseline seed 0"]
    assert _notes(study, found, [], twice) == (
        "\nno finished trial for: baseline seed 1, no_lrn seed 1"  # not baseline seed 0
        "\nleft out, trained twice under this study: baseline seed 0"
    )


@pytest.mark.ray
def test_ctrl_c_on_a_study_logs_no_table_and_resume_needs_its_state(
    ray_cluster, tiny_prepared, tmp_path, start_cli, run_cli, capsys
):
    """Ctrl-C once ended a study FINISHED with a partial table logged as its result, exit 0.
    Now: exit 130, parent KILLED, no table; a --resume that finds no Tune state where it looks
    (storage_path relative to another directory, say) once started a new grid under the old
    parent, and is now refused naming the path; the real --resume trains the trial to its end
    and logs the table."""
    from conftest import experiment_args, experiment_runs, interrupt_after_an_epoch

    from orchestrator.run import main

    args = experiment_args(
        "study",
        "configs/paper-ablations.yaml",
        tiny_prepared,
        tmp_path,
        "train.epochs=4",
        "study.name=ctrl-c",
        "study.seeds=1",
        "study.max_concurrent_trials=1",
        "study.ablations={crop: {measure: ten_crop}}",  # the baseline: the one trial
    )
    env = {"RAY_ADDRESS": ray_cluster}
    client, _ = interrupt_after_an_epoch(start_cli, args, env, tmp_path, "alexnet-studies")

    elsewhere = tmp_path / "elsewhere"
    capsys.readouterr()  # (refused before any trial: in this process, on the session's Ray)
    assert main([*args, "--resume", "--set", f"train.storage_path={elsewhere}"]) == 2
    assert f"--resume found no Tune state of study 'ctrl-c' in {elsewhere}/sweeps/ctrl-c" in (
        capsys.readouterr().err
    )
    (parent,), _ = experiment_runs(client, "alexnet-studies")
    assert parent.info.status == "KILLED"
    assert [p.name for p in elsewhere.rglob("*")] == ["sweeps", "ctrl-c", ".driver.lock"]

    resumed = run_cli(*args, "--resume", env=env)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert "study 'ctrl-c' on tiny" in resumed.stdout  # the table's title
    # Tune's console without a TensorBoard that is not there, or a best trial a study has not
    assert "TensorBoard" not in resumed.stdout + resumed.stderr
    assert "Current best trial" not in resumed.stdout + resumed.stderr
    (parent,), (trial,) = experiment_runs(client, "alexnet-studies")
    assert parent.info.status == "FINISHED" and trial.info.status == "FINISHED"
    history = client.get_metric_history(trial.info.run_id, "val_top1_error")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    assert {"study/table.md", "study/table.csv"} <= logged
    # the baseline's servable model, on the study's run
    assert f"baseline model (seed 0, epoch 4): runs:/{parent.info.run_id}/model" in resumed.stdout
    (model,) = client.search_logged_models([parent.info.experiment_id])
    assert model.source_run_id == parent.info.run_id and model.name == "model"
