"""Where AlexNet's layers live: one device, or the paper's two towers on two devices.

`Placement` is the one place that knows the difference: training builds it from the model and
the worker's devices, trains `placement.module`, and checkpoints through `state_dict` /
`load_state_dict`, which always speak the single-device layout (so a checkpoint loads into any
placement, and into `evaluate`'s plain `AlexNet`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from workloads.alexnet.model import AlexNet
from workloads.alexnet.towers import TwoTowerAlexNet


class Placement:
    """`model` on `devices[0]` (one device), or tower k on `devices[k]` (`towers=True`: the
    same device may be given twice, e.g. the CPU)."""

    def __init__(
        self,
        model: AlexNet,
        devices: Sequence[torch.device],
        towers: bool = False,
        channels_last: bool = False,
    ):
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.towers = towers
        self.devices = (devices[0], devices[-1]) if towers else (devices[0],)
        placed = TwoTowerAlexNet(model, self.devices) if towers else model.to(self.devices[0])
        self.module: nn.Module = placed.to(memory_format=memory_format)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The weights in `AlexNet`'s single-device layout."""
        if self.towers:
            return self.module.single_device_state_dict()
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Weights in the single-device layout (any placement's `state_dict`)."""
        if self.towers:
            self.module.load_single_device_state_dict(state)
        else:
            self.module.load_state_dict(state)

    def describe(self) -> str:
        if self.towers:
            return f"tower 0 on {self.devices[0]}, tower 1 on {self.devices[1]}"
        return str(self.devices[0])
