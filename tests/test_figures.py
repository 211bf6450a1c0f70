"""The paper's figures (orchestrator/analysis/figures.py): conv1's kernels tower by tower, top-5
predictions, fc7 nearest neighbours searched with Ray Data (or in this process, for a small
set), the confusion matrix; the `figures` and `neighbors` commands on a checkpoint file. (A
training run logs the figures into MLflow: test_fault_tolerance.py.)"""

import dataclasses

import numpy as np
import pytest
import torch

from orchestrator.common.errors import InputError
from orchestrator.common.paths import CONFIGS
from orchestrator.common.yaml_config import to_yaml
from orchestrator.config.experiment import load_config
from orchestrator.data.prepared import open_prepared
from workloads.alexnet import probe
from workloads.alexnet.config import ModelConfig
from workloads.alexnet.model import build_model


@pytest.mark.parametrize("variant, towers, kernels", [("paper", 2, 48), ("torchvision", 1, 64)])
def test_kernel_grid_holds_every_conv1_kernel_tower_by_tower(variant, towers, kernels):
    model = build_model(ModelConfig(variant=variant, num_classes=10))
    blocks = probe.conv1_kernels(model)
    assert [block.shape for block in blocks] == [(kernels, 11, 11, 3)] * towers  # 96 at full width
    weight = model.features[0].weight.detach().permute(0, 2, 3, 1).numpy()  # (K, 11, 11, 3)
    last = weight[-1]  # the last kernel of the last tower, scaled by its own min and max
    expected = (last - last.min()) / (last.max() - last.min())
    np.testing.assert_allclose(blocks[-1][-1], expected, atol=1e-6)

    grid = probe.tile_grid(blocks, columns=16)
    rows = kernels // 16  # 3 rows of 16 per tower (paper), 4 (torchvision)
    block_height = rows * 12 + 11  # tiles 11 px and 1 px apart, a tile's height between towers
    assert grid.shape == (towers * block_height - 11 + 1, 16 * 12 + 1, 3)

    def tile(tower, i):
        top, left = 1 + tower * block_height + (i // 16) * 12, 1 + (i % 16) * 12
        return grid[top : top + 11, left : left + 11]

    shown = [[tile(t, i) for i in range(kernels)] for t in range(towers)]
    np.testing.assert_array_equal(np.array(shown), np.array(blocks))  # every kernel, in place
    if towers == 2:
        assert (grid[1 + rows * 12 : block_height + 1] == 1).all()  # white between the towers


def _checkpoint(tiny_prepared, path, seed=3):
    """A checkpoint file as `train` writes one, of an untrained demo model on tiny_prepared."""
    config = load_config(
        CONFIGS / "demo.yaml", ["data.source=prepared", f"data.root={tiny_prepared}"]
    )
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, num_classes=5))
    torch.manual_seed(seed)
    model = build_model(config.model)
    torch.save(
        {
            "epoch": 0,
            "model": model.state_dict(),
            "config": to_yaml(config),
            "classes": open_prepared(tiny_prepared).classes,
        },
        path,
    )
    return path


def test_figures_and_neighbors_of_a_checkpoint(
    ray_cluster, tiny_dataset, tiny_prepared, tmp_path, monkeypatch
):
    from orchestrator.analysis import scoring
    from orchestrator.analysis.evaluate import validation_errors
    from orchestrator.analysis.trained import open_trained
    from orchestrator.commands import figures as figures_command
    from orchestrator.commands import neighbors

    checkpoint = str(_checkpoint(tiny_prepared, tmp_path / "checkpoint.pt"))
    root, _ = tiny_dataset
    image = sorted((root / "train").glob("*/*"))[17]  # a training image, as the user has it

    # `neighbors`: the image's nearest training image is itself (prepared the way `prepare`
    # prepared it), at distance 0, then the others farther (scored in this process: a small set)
    (found,) = neighbors.search(checkpoint, [image], 3, tmp_path / "nb.png", [])
    assert [n.path for n in found][:1] == [str(image.relative_to(root))]
    assert found[0].distance < 1e-4 < found[1].distance <= found[2].distance
    assert (tmp_path / "nb.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # bounded: a cap on the neighbours, and the images scored a group at a time (here one per
    # pass), each its own nearest, the same as alone
    with pytest.raises(InputError, match=r"--count: got 2000; allowed: 1\.\.50"):
        neighbors.search(checkpoint, [image], 2000, None, [])
    monkeypatch.setattr(scoring, "QUERIES_PER_PASS", 1)
    other = sorted((root / "train").glob("*/*"))[3]
    pair = neighbors.search(checkpoint, [image, other], 3, None, [])
    assert [found[0].path for found in pair] == [str(p.relative_to(root)) for p in (image, other)]
    assert [(n.path, n.distance) for n in pair[0]] == [(n.path, n.distance) for n in found]

    # `figures`: every file; the confusion matrix counts every validation image once and its
    # error is what `evaluate` measures; the top-5 are the model's own, highest first. Scored
    # by Ray Data tasks, as a set of more than SCORED_HERE_UP_TO images is
    monkeypatch.setattr(scoring, "SCORED_HERE_UP_TO", 0)
    made = figures_command.write(checkpoint, tmp_path / "figures", [])
    files = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert files == sorted(
        [
            "conv1_kernels.png",
            "predictions.png",
            "neighbors.png",
            "confusion_matrix.png",
            "confusion_matrix.csv",
        ]
    )
    assert made.confusion.sum() == 100  # 5 classes x 20 validation images
    trained = open_trained(checkpoint, [])
    metrics, _ = validation_errors(trained, ten_crop=False)
    error = 1 - np.trace(made.confusion) / made.confusion.sum()
    assert error == pytest.approx(metrics["val_top1_error"], abs=1e-9)
    logits = trained.model()(trained.transform().center(torch.from_numpy(made.images["image"])))
    np.testing.assert_array_equal(made.top_classes[:, 0], logits.argmax(1).numpy())
    assert (np.diff(made.top_probabilities, axis=1) <= 0).all()
    assert len(made.neighbors) == 6 and all(len(found) == 5 for found in made.neighbors)
    assert all(n.path.startswith("train/") for found in made.neighbors for n in found)


def test_a_checkpoint_is_scored_on_the_prepared_data_it_names_and_nothing_is_prepared(
    ray_cluster, tiny_prepared, tmp_path, monkeypatch
):
    """`evaluate`, `figures` and `neighbors` once ran `prepare` from the checkpoint's config in
    the current directory: the demo's data generated again there, an image folder prepared anew
    from whatever it holds now, and scored if it changed. Now they open the prepared data the
    checkpoint names, refuse it if its key changed, and prepare nothing unless --set says."""
    from orchestrator.analysis.trained import open_trained

    monkeypatch.chdir(tmp_path)  # where the old path generated the demo's data
    path = _checkpoint(tiny_prepared, tmp_path / "checkpoint.pt")
    state = torch.load(path, weights_only=True)
    raw = load_config(CONFIGS / "demo.yaml", ["model.num_classes=5"])
    state["config"] = to_yaml(raw)  # trained from the demo's raw (synthetic) source
    state["data"] = {"uri": tiny_prepared, "key": open_prepared(tiny_prepared).key}
    torch.save(state, path)
    trained = open_trained(str(path), [])
    assert trained.data.uri == tiny_prepared
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # nothing made here

    state["data"]["key"] = "a-key-of-other-data"
    torch.save(state, path)
    with pytest.raises(InputError, match="is not what .* was trained on \\(its key was a-key-of"):
        open_trained(str(path), [])
    del state["data"]  # a checkpoint from before they named their data
    torch.save(state, path)
    with pytest.raises(InputError, match="does not name the prepared folder"):
        open_trained(str(path), [])
    chosen = ["data.source=prepared", f"data.root={tiny_prepared}"]
    assert open_trained(str(path), chosen).data.uri == tiny_prepared
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
