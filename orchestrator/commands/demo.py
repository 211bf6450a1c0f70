"""`demo`, the default command: `train` on the shipped demo config (a CPU-sized AlexNet on a
generated dataset)."""

from __future__ import annotations

from orchestrator.commands import train
from orchestrator.common.paths import DEMO_CONFIG


def add_arguments(parser) -> None:
    train.add_arguments(parser, default_config=DEMO_CONFIG)


run = train.run
