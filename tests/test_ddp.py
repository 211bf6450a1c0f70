"""Data parallelism is exact: 2 DDP workers x batch b step like one process with batch 2b."""

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from workloads.alexnet.engine import OptimizerConfig, build_optimizer, train_step
from workloads.alexnet.model import ModelConfig, build_model

CONFIG = ModelConfig(
    input_size=32, stem_stride=1, width=0.125, num_classes=4, dropout=0.0, init="kaiming"
)
LR = 0.5  # at batch 128: 0.03 here, so that every layer moves well beyond float rounding
STEPS = 3  # momentum and weight decay take part from the second step on


def _batches():
    generator = torch.Generator().manual_seed(7)
    return [
        (
            torch.randn(8, 3, 32, 32, generator=generator),
            torch.randint(0, 4, (8,), generator=generator),
        )
        for _ in range(STEPS)
    ]


def _ddp_worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(build_model(CONFIG))
    optimizer = build_optimizer(model, OptimizerConfig(lr=LR), global_batch_size=8)
    for images, labels in _batches():
        half = slice(rank * 4, (rank + 1) * 4)  # each worker: its 4 of the 8
        train_step(model, optimizer, images[half], labels[half])
    if rank == 0:
        torch.save(model.module.state_dict(), out)
    dist.destroy_process_group()


def test_two_ddp_workers_equal_one_process_with_the_double_batch():
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "ddp.pt")
        mp.spawn(_ddp_worker, args=(2, 29517, out), nprocs=2, join=True)
        ddp_state = torch.load(out, weights_only=True)

    torch.manual_seed(0)
    model = build_model(CONFIG)
    optimizer = build_optimizer(model, OptimizerConfig(lr=LR), global_batch_size=8)
    for images, labels in _batches():
        train_step(model, optimizer, images, labels)  # the whole 8 in one process

    torch.manual_seed(0)
    initial = build_model(CONFIG).state_dict()
    for key, value in model.state_dict().items():
        moved = (value - initial[key]).norm()
        assert moved > 1e-3, key  # the step did change this tensor
        assert (ddp_state[key] - value).norm() < 1e-4 * moved, key  # and DDP changed it alike
