"""The two-tower split computes exactly what the single-device two-tower AlexNet computes."""

import pytest
import torch

from workloads.alexnet.model import ModelConfig, build_model
from workloads.alexnet.towers import TwoTowerAlexNet

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    config = ModelConfig(input_size=64, stem_stride=1, width=0.25, num_classes=10, init="kaiming")
    single = build_model(config)
    return single, TwoTowerAlexNet(single, (CPU, CPU))


def test_same_parameter_count_and_round_trip(pair):
    single, towers = pair
    assert sum(p.numel() for p in towers.parameters()) == sum(
        p.numel() for p in single.parameters()
    )
    back = towers.single_device_state_dict()
    for key, value in single.state_dict().items():
        torch.testing.assert_close(back[key], value, rtol=0, atol=0)


def test_outputs_match_the_single_device_model(pair):
    single, towers = pair
    single.eval(), towers.eval()
    x = torch.randn(4, 3, 64, 64)
    torch.testing.assert_close(towers(x), single(x), rtol=1e-5, atol=1e-5)


def test_gradients_match_the_single_device_model():
    """In float64, where summation order does not blur the comparison: the same math."""
    torch.manual_seed(1)
    config = ModelConfig(input_size=64, stem_stride=1, width=0.25, num_classes=10, dropout=0.0)
    single = build_model(config).double()  # dropout 0: its masks are random draws
    towers = TwoTowerAlexNet(single, (CPU, CPU)).double()
    x, y = torch.randn(4, 3, 64, 64, dtype=torch.float64), torch.arange(4)
    torch.nn.functional.cross_entropy(single(x), y).backward()
    torch.nn.functional.cross_entropy(towers(x), y).backward()
    single_grads = [layer.weight.grad for layer in single.conv_layers() + single.fc_layers()]
    tower_layers = [
        [t.stage1[0] for t in towers.towers],
        [t.stage1[4] for t in towers.towers],
        [t.conv3[0] for t in towers.towers],
        [t.stage4[0] for t in towers.towers],
        [t.stage4[2] for t in towers.towers],
        [t.fc6[0] for t in towers.towers],
        [t.fc7[0] for t in towers.towers],
    ]
    tower_grads = [torch.cat([half.weight.grad for half in halves]) for halves in tower_layers]
    tower_grads.append(towers.fc8.weight.grad)
    for expected, actual in zip(single_grads, tower_grads, strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)


def test_one_tower_nets_are_refused():
    with pytest.raises(ValueError, match="towers=2"):
        TwoTowerAlexNet(
            build_model(ModelConfig(towers=1, input_size=64, stem_stride=1)), (CPU, CPU)
        )
