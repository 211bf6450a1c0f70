"""The paper's model parallelism: tower k of AlexNet on device k (the model file stays pure).

`TwoTowerAlexNet` holds the same weights as a two-tower `AlexNet` (towers=2), cut in halves:
conv1, conv2, conv4 and conv5 per tower (conv2/4/5 see only their own tower's maps), and the
output maps of conv3, fc6 and fc7 split between the towers, which exchange activations exactly
at the inputs of conv3, fc6, fc7 and fc8, as in the paper (fc8 runs on device 0). Its outputs
and gradients equal the single-device model's for the same weights, so checkpoints use the
single-device layout (`single_device_state_dict`) and load into either.

With one device given twice (CPU), the same code runs with no copies at the exchanges.
"""

from __future__ import annotations

import torch
from torch import nn

from workloads.alexnet.model import AlexNet, TowerLocalResponseNorm

_EXCHANGES = ("conv3", "fc6", "fc7", "fc8")  # where the towers read each other's activations


def _half(layer: nn.Module, k: int) -> nn.Module:
    """Tower k's half of a conv or linear layer: half its output channels, all its inputs.

    For a grouped conv (groups=2) the weight's inputs are already one tower's maps.
    """
    weight, bias = layer.weight.detach(), layer.bias.detach()
    rows = slice(k * weight.shape[0] // 2, (k + 1) * weight.shape[0] // 2)
    weight, bias = weight[rows], bias[rows]
    if isinstance(layer, nn.Conv2d):
        half = nn.Conv2d(
            weight.shape[1],
            weight.shape[0],
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
        )
    else:
        half = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        half.weight.copy_(weight)
        half.bias.copy_(bias)
    return half


class _Tower(nn.Module):
    """One tower's layers, kept on one device."""

    def __init__(self, source: AlexNet, k: int):
        super().__init__()
        convs, fcs = source.conv_layers(), source.fc_layers()
        features = list(source.features)
        config = source.config
        act = (lambda: nn.ReLU(inplace=True)) if config.activation == "relu" else nn.Tanh
        pools = [m for m in features if isinstance(m, nn.MaxPool2d)]
        lrn = (lambda: TowerLocalResponseNorm(towers=1)) if config.lrn else nn.Identity
        # conv1 (own half of the kernels, whole image), conv2 (grouped: own maps only)
        self.stage1 = nn.Sequential(
            _half(convs[0], k), act(), lrn(), _copy(pools[0]),
            _half(convs[1], k), act(), lrn(), _copy(pools[1]),
        )  # fmt: skip
        self.conv3 = nn.Sequential(_half(convs[2], k), act())  # reads both towers
        self.stage4 = nn.Sequential(
            _half(convs[3], k), act(),
            _half(convs[4], k), act(), _copy(pools[2]), nn.AdaptiveAvgPool2d(6),
        )  # fmt: skip
        paper_dropout = isinstance(source.classifier[2], nn.Dropout)  # after fc6/fc7 (paper)
        p = config.dropout
        if paper_dropout:
            self.fc6 = nn.Sequential(_half(fcs[0], k), act(), nn.Dropout(p))
            self.fc7 = nn.Sequential(_half(fcs[1], k), act(), nn.Dropout(p))
        else:
            self.fc6 = nn.Sequential(nn.Dropout(p), _half(fcs[0], k), act())
            self.fc7 = nn.Sequential(nn.Dropout(p), _half(fcs[1], k), act())


def _copy(pool: nn.MaxPool2d) -> nn.MaxPool2d:
    return nn.MaxPool2d(pool.kernel_size, pool.stride)


class TwoTowerAlexNet(nn.Module):
    """AlexNet with tower k on `devices[k]`; inputs on devices[0], logits on devices[0]."""

    def __init__(self, source: AlexNet, devices: tuple[torch.device, torch.device]):
        super().__init__()
        if source.config.towers != 2:
            raise ValueError("model.towers: the two-tower split needs towers=2")
        self.devices = tuple(torch.device(d) for d in devices)
        self.config = source.config
        self.towers = nn.ModuleList([_Tower(source, k).to(self.devices[k]) for k in range(2)])
        fc8 = source.fc_layers()[2]
        self.fc8 = nn.Linear(fc8.in_features, fc8.out_features).to(self.devices[0])
        with torch.no_grad():
            self.fc8.weight.copy_(fc8.weight)
            self.fc8.bias.copy_(fc8.bias)

    def _exchange(self, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """Both towers' activations, concatenated along channels, on each tower's device."""
        return [torch.cat([p.to(device) for p in parts], dim=1) for device in self.devices]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t0, t1 = self.towers
        inputs = [x.to(self.devices[0]), x.to(self.devices[1])]
        h = [t0.stage1(inputs[0]), t1.stage1(inputs[1])]  # (B, 128w, 13, 13) each
        h = self._exchange(h)  # conv3 reads both towers: (B, 256w, 13, 13) on each device
        h = [t0.conv3(h[0]), t1.conv3(h[1])]  # (B, 192w, 13, 13) each
        h = [t0.stage4(h[0]), t1.stage4(h[1])]  # (B, 128w, 6, 6) each
        h = self._exchange([torch.flatten(part, 1) for part in h])  # fc6 input: (B, 9216w)
        h = self._exchange([t0.fc6(h[0]), t1.fc6(h[1])])  # fc7 input: (B, 4096w)
        h = [t0.fc7(h[0]), t1.fc7(h[1])]  # (B, 2048w) each
        return self.fc8(torch.cat([part.to(self.devices[0]) for part in h], dim=1))

    def single_device_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights in `AlexNet`'s (grouped, single-device) layout, on the CPU."""
        target = AlexNet(self.config)
        convs, fcs = target.conv_layers(), target.fc_layers()
        halves = [
            [t.stage1[0] for t in self.towers],
            [t.stage1[4] for t in self.towers],
            [t.conv3[0] for t in self.towers],
            [t.stage4[0] for t in self.towers],
            [t.stage4[2] for t in self.towers],
        ]
        fc_halves = [
            [next(m for m in t.fc6 if isinstance(m, nn.Linear)) for t in self.towers],
            [next(m for m in t.fc7 if isinstance(m, nn.Linear)) for t in self.towers],
        ]
        with torch.no_grad():
            for layer, parts in zip(convs + fcs[:2], halves + fc_halves, strict=True):
                layer.weight.copy_(torch.cat([p.weight.detach().cpu() for p in parts]))
                layer.bias.copy_(torch.cat([p.bias.detach().cpu() for p in parts]))
            fcs[2].weight.copy_(self.fc8.weight.detach().cpu())
            fcs[2].bias.copy_(self.fc8.bias.detach().cpu())
        return target.state_dict()

    def load_single_device_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        source = AlexNet(self.config)
        source.load_state_dict(state)
        fresh = TwoTowerAlexNet(source, self.devices)
        self.load_state_dict(fresh.state_dict())
