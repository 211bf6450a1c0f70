"""AlexNet as in Krizhevsky, Sutskever & Hinton (NIPS 2012), and torchvision's single-tower layout.

Pure model code: layers and shapes only. Nothing here knows about devices, DDP or Ray; placing
the two towers on two devices lives elsewhere.

Padding of conv1. The paper's 224x224 input with an 11x11 stride-4 kernel gives 55x55 only with
padding: the 2012 code padded 3 px on the bottom/right implicitly, Caffe cropped 227 instead, and
torchvision pads 2 px on every side. We pad 2 px on every side, like torchvision:
(224 + 2*2 - 11) // 4 + 1 = 55. The kernels stay centred and torchvision checkpoints keep their
meaning.

Small inputs (CPU runs on e.g. 64 px images) work through three knobs: `stem_stride` (conv1's
stride; 4 in the paper), `width` (multiplies every conv and fc width) and the adaptive average
pool that brings the last feature map to 6x6 (an identity at 224 px, as in torchvision).
"""

from __future__ import annotations

import torch
from torch import nn

from workloads.alexnet.config import PAPER_CONVS, TORCHVISION_CONVS, ModelConfig, pool_geometry

_FC_WIDTH = 4096
_POOLED_SIZE = 6  # the classifier sees a 6x6 map, whatever the input size

# Conv layers that stay inside their own tower (groups=2) when the net has two towers. conv1's two
# halves also sit one per tower, but both see the whole image, so a single conv computes them.
_TOWER_LOCAL_CONVS = (1, 3, 4)  # conv2, conv4, conv5 (0-based)
# Layers whose bias the paper initialises to 1 (the rest to 0).
_PAPER_UNIT_BIAS_CONVS = (1, 3, 4)
_PAPER_UNIT_BIAS_FCS = (0, 1)  # fc6, fc7


def _scaled(channels: int, width: float, groups: int) -> int:
    """Channels at `width`, rounded to a multiple of the group count (at least one per group)."""
    return max(groups, round(channels * width / groups) * groups)


class TowerLocalResponseNorm(nn.LocalResponseNorm):
    """The paper's LRN (n=5, alpha=1e-4, beta=0.75, k=2), within each tower.

    Each GPU of the 2012 net normalised over its own kernel maps, so the window of 5 adjacent
    maps never crosses from one tower into the other. With `towers=1` this is
    `nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)`, which matches the 2012 code's formula exactly.
    """

    def __init__(self, towers: int = 1):
        super().__init__(size=5, alpha=1e-4, beta=0.75, k=2.0)
        self.towers = towers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.towers == 1:
            return super().forward(x)
        return torch.cat(
            [
                super(TowerLocalResponseNorm, self).forward(part)
                for part in x.chunk(self.towers, dim=1)
            ],
            dim=1,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, towers={self.towers}"


class AlexNet(nn.Module):
    """`features` -> `avgpool` -> `classifier`, with torchvision's stage names.

    Paper variant at 224 px: 60,965,224 parameters at 1000 classes, ~0.72 G multiply-adds.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        config = config.resolved()
        self.config = config
        paper = config.variant == "paper"
        groups = config.towers

        def act() -> nn.Module:
            return nn.ReLU(inplace=True) if config.activation == "relu" else nn.Tanh()

        pool_k, pool_s = pool_geometry(config.pool)

        layers: list[nn.Module] = []
        in_channels = 3
        for i, (out_channels, kernel, stride, padding) in enumerate(
            PAPER_CONVS if paper else TORCHVISION_CONVS
        ):
            out_channels = _scaled(out_channels, config.width, groups)
            layers += [
                nn.Conv2d(
                    in_channels,
                    out_channels,
                    kernel,
                    stride=config.stem_stride if i == 0 else stride,
                    padding=padding,
                    groups=groups if i in _TOWER_LOCAL_CONVS else 1,
                ),
                act(),
            ]
            if i in (0, 1):
                if config.lrn:
                    layers.append(TowerLocalResponseNorm(towers=groups))
                layers.append(nn.MaxPool2d(pool_k, pool_s))
            in_channels = out_channels
        layers.append(nn.MaxPool2d(pool_k, pool_s))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(_POOLED_SIZE)

        fc_width = _scaled(_FC_WIDTH, config.width, groups)
        fc_in = in_channels * _POOLED_SIZE * _POOLED_SIZE
        linear6 = nn.Linear(fc_in, fc_width)
        linear7 = nn.Linear(fc_width, fc_width)
        linear8 = nn.Linear(fc_width, config.num_classes)
        if paper:  # dropout on the outputs of fc6 and fc7
            self.classifier = nn.Sequential(
                linear6, act(), nn.Dropout(config.dropout),
                linear7, act(), nn.Dropout(config.dropout),
                linear8,
            )  # fmt: skip
        else:  # torchvision: dropout on the inputs of fc6 and fc7
            self.classifier = nn.Sequential(
                nn.Dropout(config.dropout), linear6, act(),
                nn.Dropout(config.dropout), linear7, act(),
                linear8,
            )  # fmt: skip
        self.reset_parameters()

    def conv_layers(self) -> list[nn.Conv2d]:
        return [m for m in self.features if isinstance(m, nn.Conv2d)]

    def fc_layers(self) -> list[nn.Linear]:
        return [m for m in self.classifier if isinstance(m, nn.Linear)]

    def reset_parameters(self) -> None:
        init = self.config.init
        if init == "pytorch":
            return  # the layers' own defaults, as torchvision.models.alexnet()
        convs, fcs = self.conv_layers(), self.fc_layers()
        for layers, unit_bias in ((convs, _PAPER_UNIT_BIAS_CONVS), (fcs, _PAPER_UNIT_BIAS_FCS)):
            for i, layer in enumerate(layers):
                if init == "paper":  # N(0, 0.01^2); biases 1 in conv2/4/5 and fc6/7, else 0
                    nn.init.normal_(layer.weight, mean=0.0, std=0.01)
                    nn.init.constant_(layer.bias, 1.0 if i in unit_bias else 0.0)
                else:  # kaiming: He-normal weights, zero biases; learns fast from scratch
                    nonlinearity = "relu" if self.config.activation == "relu" else "tanh"
                    is_output = layer is fcs[-1]
                    nn.init.kaiming_normal_(
                        layer.weight, nonlinearity="linear" if is_output else nonlinearity
                    )
                    nn.init.zeros_(layer.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations (fc7, after its non-linearity): (B, 4096 * width)."""
        x = self.features(x)  # (B, 256w, s, s)
        x = self.avgpool(x)  # (B, 256w, 6, 6)
        x = torch.flatten(x, 1)  # (B, 9216w)
        return self.classifier[:-1](x)  # (B, 4096w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 256w, s, s)
        x = self.avgpool(x)  # (B, 256w, 6, 6)
        x = torch.flatten(x, 1)  # (B, 9216w)
        return self.classifier(x)  # (B, num_classes)


def build_model(config: ModelConfig) -> AlexNet:
    return AlexNet(config)
