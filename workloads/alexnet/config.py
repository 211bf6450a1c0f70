"""What AlexNet to build and how to optimise it: the config sections of this package, and the
layer geometry they are checked against. No torch here: the command line validates a config
without importing it (`model.py` builds the net, `engine.py` the optimizer).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from workloads.alexnet.schedule import ScheduleConfig

# a served image larger than this is refused before it is decoded: 40 M pixels decode to 120 MB
# (workloads/alexnet/predictor.py, the inference section)
DEFAULT_MAX_PIXELS = 40_000_000
# (out_channels, kernel, stride, padding) per conv layer at width 1.
PAPER_CONVS = ((96, 11, 4, 2), (256, 5, 1, 2), (384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1))
TORCHVISION_CONVS = (
    (64, 11, 4, 2),
    (192, 5, 1, 2),
    (384, 3, 1, 1),
    (256, 3, 1, 1),
    (256, 3, 1, 1),
)


@dataclass(frozen=True)
class ModelConfig:
    """What AlexNet to build. `None` fields take the variant's own default."""

    variant: Literal["paper", "torchvision"] = "paper"  # the 2012 net, or torchvision's
    num_classes: int | None = None  # None: from the data (1000 when there is no data)
    input_size: int = 224  # side of the square crop the net sees, in pixels
    width: float = 1.0  # multiplies every conv and fc width (0.25 = quarter-width for CPU runs)
    stem_stride: int = 4  # conv1's stride; 1 or 2 keeps enough resolution for small inputs
    activation: Literal["relu", "tanh"] = "relu"  # tanh: the paper's Figure 1 comparison
    lrn: bool | None = None  # paper: on, torchvision: off
    pool: Literal["overlapping", "plain"] = "overlapping"  # max-pool 3/2 (paper) or 2/2
    dropout: float = 0.5  # on the outputs of fc6 and fc7 (paper); before them (torchvision)
    towers: Literal[1, 2] | None = None  # paper: 2 (groups=2 at conv2/4/5), torchvision: 1
    init: Literal["paper", "kaiming", "pytorch"] | None = None  # paper: paper, torchvision: pytorch

    def __post_init__(self):
        if self.num_classes is not None and self.num_classes < 2:
            raise ValueError(f"num_classes: got {self.num_classes}; allowed: an integer >= 2")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: got {self.dropout}; allowed: 0 <= dropout < 1")
        if not 0.0 < self.width <= 4.0:
            raise ValueError(f"width: got {self.width}; allowed: 0 < width <= 4")
        if self.stem_stride not in (1, 2, 3, 4):
            raise ValueError(f"stem_stride: got {self.stem_stride}; allowed: 1, 2, 3, 4")
        sizes = feature_map_sizes(self)
        if min(sizes.values()) < 1:
            raise ValueError(
                f"input_size: got {self.input_size}; the feature map vanishes ({sizes}); "
                "use a larger input_size or a smaller stem_stride"
            )

    def resolved(self) -> "ModelConfig":
        """The same config with every variant default filled in."""
        paper = self.variant == "paper"
        return dataclasses.replace(
            self,
            num_classes=self.num_classes or 1000,
            lrn=paper if self.lrn is None else self.lrn,
            towers=(2 if paper else 1) if self.towers is None else self.towers,
            init=("paper" if paper else "pytorch") if self.init is None else self.init,
        )


def pool_geometry(pool: str) -> tuple[int, int]:
    return (3, 2) if pool == "overlapping" else (2, 2)


def feature_map_sizes(config: ModelConfig) -> dict[str, int]:
    """Side of the square feature map after each stage, for `config.input_size`."""

    def conv(size, kernel, stride, padding):
        return (size + 2 * padding - kernel) // stride + 1

    pool_k, pool_s = pool_geometry(config.pool)
    convs = PAPER_CONVS if config.variant == "paper" else TORCHVISION_CONVS
    sizes = {}
    size = conv(config.input_size, convs[0][1], config.stem_stride, convs[0][3])
    sizes["conv1"] = size
    size = conv(size, pool_k, pool_s, 0)
    sizes["pool1"] = size
    sizes["conv2"] = size  # 5x5 pad 2 keeps the size
    size = conv(size, pool_k, pool_s, 0)
    sizes["pool2"] = size
    sizes["conv5"] = size  # 3x3 pad 1 keeps the size
    sizes["pool5"] = conv(size, pool_k, pool_s, 0)
    return sizes


@dataclass(frozen=True)
class OptimizerConfig:
    """The paper's SGD: momentum 0.9, weight decay 5e-4, lr 0.01 at batch 128, /10 on plateaus.

    PyTorch's SGD applies the learning rate outside the momentum buffer (v = 0.9 v + g;
    w -= lr v), the paper inside it (v = 0.9 v - lr g; w += v). With a constant lr the two are
    the same; at an lr drop, PyTorch's step shrinks at once, while the paper's velocity still
    carries the old, larger steps and fades over ~10 iterations (0.9^k).
    """

    lr: float = 0.01  # at `reference_batch_size`; scaled linearly with the global batch
    reference_batch_size: int = 128  # the batch `lr` is given for (the paper's)
    momentum: float = 0.9  # SGD momentum (paper: 0.9)
    weight_decay: float = 5e-4  # L2 on every weight (paper: 0.0005)
    no_bias_decay: bool = False  # the 2012 code decayed weights only, not biases
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"lr: got {self.lr}; allowed: a number > 0")
        if self.reference_batch_size < 1:
            raise ValueError(
                f"reference_batch_size: got {self.reference_batch_size}; allowed: an integer >= 1"
            )
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum: got {self.momentum}; allowed: 0 <= momentum < 1")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: got {self.weight_decay}; allowed: a number >= 0")

    def scaled_lr(self, global_batch_size: int) -> float:
        """Linear scaling: batch 256 with lr 0.02 matches batch 128 with lr 0.01 (the paper)."""
        return self.lr * global_batch_size / self.reference_batch_size
