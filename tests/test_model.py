"""The AlexNet model: the paper's exact structure, torchvision compatibility, the config knobs."""

import pytest
import torch
import torchvision
from torch import nn

from workloads.alexnet.model import ModelConfig, build_model


def convs(model):
    return model.conv_layers()


def fcs(model):
    return model.fc_layers()


@pytest.fixture(scope="module")
def paper():
    torch.manual_seed(0)
    return build_model(ModelConfig(variant="paper"))


def test_paper_parameter_count(paper):
    assert sum(p.numel() for p in paper.parameters()) == 60_965_224


def test_paper_output_and_conv1_map_at_224(paper):
    x = torch.randn(2, 3, 224, 224)
    assert paper.features[0](x).shape == (2, 96, 55, 55)
    assert paper(x).shape == (2, 1000)
    assert paper.features(x).shape == (2, 256, 6, 6)


def test_paper_grouped_structure(paper):
    conv1, conv2, conv3, conv4, conv5 = convs(paper)
    # (out, in per group, kh, kw): conv2/4/5 stay inside their tower, conv3 sees both towers.
    assert conv1.weight.shape == (96, 3, 11, 11) and conv1.stride == (4, 4)
    assert conv2.weight.shape == (256, 48, 5, 5) and conv2.groups == 2
    assert conv3.weight.shape == (384, 256, 3, 3) and conv3.groups == 1
    assert conv4.weight.shape == (384, 192, 3, 3) and conv4.groups == 2
    assert conv5.weight.shape == (256, 192, 3, 3) and conv5.groups == 2
    assert [fc.weight.shape for fc in fcs(paper)] == [(4096, 9216), (4096, 4096), (1000, 4096)]


def test_paper_layer_order_lrn_pool_dropout(paper):
    kinds = [type(m).__name__ for m in paper.features]
    assert kinds == [
        "Conv2d",
        "ReLU",
        "TowerLocalResponseNorm",
        "MaxPool2d",
        "Conv2d",
        "ReLU",
        "TowerLocalResponseNorm",
        "MaxPool2d",
        "Conv2d",
        "ReLU",
        "Conv2d",
        "ReLU",
        "Conv2d",
        "ReLU",
        "MaxPool2d",
    ]
    for pool in (m for m in paper.features if isinstance(m, nn.MaxPool2d)):
        assert (pool.kernel_size, pool.stride) == (3, 2)  # overlapping pooling
    # Dropout 0.5 on the outputs of fc6 and fc7 (after their ReLU), as in the paper.
    kinds = [type(m).__name__ for m in paper.classifier]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert all(m.p == 0.5 for m in paper.classifier if isinstance(m, nn.Dropout))


def test_lrn_constants_and_formula(paper):
    lrns = [m for m in paper.features if isinstance(m, nn.LocalResponseNorm)]
    assert len(lrns) == 2
    for lrn in lrns:
        assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)
    # b_i = a_i / (k + alpha/n * sum_{j=i-2..i+2} a_j^2)^beta, as in the 2012 code.
    a = torch.rand(1, 8, 3, 3) * 50
    squares = torch.nn.functional.pad(a.pow(2), (0, 0, 0, 0, 2, 2))  # pad channels
    window = sum(squares[:, j : j + 8] for j in range(5))
    expected = a / (2.0 + 1e-4 / 5 * window).pow(0.75)
    torch.testing.assert_close(nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(a), expected)
    # In the two-tower net each tower normalises over its own maps: conv1's 96 maps are two
    # towers of 48, and a change in map 48 (tower 1) leaves tower 0's map 47 as it was.
    assert all(lrn.towers == 2 for lrn in lrns)
    x = torch.rand(1, 96, 4, 4) * 50
    bumped = x.clone()
    bumped[:, 48] += 100
    torch.testing.assert_close(lrns[0](bumped)[:, :48], lrns[0](x)[:, :48])
    assert not torch.allclose(lrns[0](bumped)[:, 49], lrns[0](x)[:, 49])
    torch.testing.assert_close(
        lrns[0](x)[:, :48], nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(x[:, :48])
    )


def test_paper_init(paper):
    for layer in convs(paper) + fcs(paper):
        assert abs(layer.weight.std().item() - 0.01) < 0.0005
        assert abs(layer.weight.mean().item()) < 0.001
    conv_biases = [c.bias.unique().tolist() for c in convs(paper)]
    fc_biases = [f.bias.unique().tolist() for f in fcs(paper)]
    assert conv_biases == [[0.0], [1.0], [0.0], [1.0], [1.0]]  # 1 in conv2, conv4, conv5
    assert fc_biases == [[1.0], [1.0], [0.0]]  # 1 in fc6, fc7


def test_torchvision_variant_loads_torchvision_state_dict_strictly():
    reference = torchvision.models.alexnet(weights=None).eval()
    ours = build_model(ModelConfig(variant="torchvision")).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert sum(p.numel() for p in ours.parameters()) == 61_100_840
    x = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(ours(x), reference(x))


def test_variant_defaults_resolve():
    tv = ModelConfig(variant="torchvision").resolved()
    assert (tv.towers, tv.lrn, tv.init, tv.num_classes) == (1, False, "pytorch", 1000)
    paper = ModelConfig().resolved()
    assert (paper.towers, paper.lrn, paper.init) == (2, True, "paper")


def test_knobs_change_the_structure():
    model = build_model(
        ModelConfig(activation="tanh", lrn=False, pool="plain", towers=1, dropout=0.3)
    )
    kinds = {type(m).__name__ for m in model.modules()}
    assert "Tanh" in kinds and "ReLU" not in kinds and "LocalResponseNorm" not in kinds
    assert all(m.kernel_size == 2 for m in model.modules() if isinstance(m, nn.MaxPool2d))
    assert all(c.groups == 1 for c in convs(model))
    assert all(m.p == 0.3 for m in model.modules() if isinstance(m, nn.Dropout))
    # One tower with the full kernels has more weights than two towers: conv2/4/5 see all inputs.
    grouped = 48 * 256 * 25 + 192 * 384 * 9 + 192 * 256 * 9
    assert sum(p.numel() for p in model.parameters()) == 60_965_224 + grouped
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


@pytest.mark.parametrize("input_size, stem_stride", [(64, 1), (64, 2), (56, 2), (32, 1)])
def test_small_inputs(input_size, stem_stride):
    model = build_model(
        ModelConfig(input_size=input_size, stem_stride=stem_stride, width=0.25, num_classes=10)
    )
    assert model(torch.randn(2, 3, input_size, input_size)).shape == (2, 10)
    assert convs(model)[1].weight.shape == (64, 12, 5, 5)  # quarter width, still two towers


def test_vanishing_feature_map_is_rejected():
    with pytest.raises(ValueError, match="input_size: got 56"):
        ModelConfig(input_size=56, stem_stride=4)


def test_kaiming_init_biases_zero():
    model = build_model(ModelConfig(init="kaiming", width=0.25, input_size=64, stem_stride=1))
    assert all((layer.bias == 0).all() for layer in convs(model) + fcs(model))
    conv1 = convs(model)[0]
    fan_in = 3 * 11 * 11
    assert abs(conv1.weight.std().item() - (2 / fan_in) ** 0.5) < 0.01


def test_forward_features_is_the_last_hidden_layer():
    model = build_model(ModelConfig(width=0.25, input_size=64, stem_stride=1, num_classes=7)).eval()
    x = torch.randn(3, 3, 64, 64)
    features = model.forward_features(x)
    assert features.shape == (3, 1024)
    torch.testing.assert_close(model.classifier[-1](features), model(x))
