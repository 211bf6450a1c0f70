"""Checks that need a CUDA GPU; skipped without one. They run the same code as training does:
the paper's two-tower split on two devices (or one device twice), a bf16 autocast step, and
channels_last, each against the plain fp32 single-device network."""

import copy

import pytest
import torch

from workloads.alexnet.engine import OptimizerConfig, build_optimizer, train_step
from workloads.alexnet.model import ModelConfig, build_model
from workloads.alexnet.towers import TwoTowerAlexNet

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
CONFIG = ModelConfig(input_size=224, num_classes=1000)  # the paper's network


@pytest.fixture(autouse=True)
def exact_fp32():
    """TF32 would blur fp32 comparisons on Ampere and later."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _devices() -> tuple[torch.device, torch.device]:
    last = torch.cuda.device_count() - 1
    return torch.device("cuda:0"), torch.device(f"cuda:{min(last, 1)}")


def test_towers_on_two_devices_equal_the_single_device_net():
    torch.manual_seed(0)
    single = build_model(CONFIG).cuda().eval()
    towers = TwoTowerAlexNet(copy.deepcopy(single), _devices()).eval()
    images = torch.randn(8, 3, 224, 224, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(
            towers(images).to("cuda:0"), single(images), rtol=1e-4, atol=1e-4
        )


def test_a_bf16_step_follows_the_fp32_step():
    torch.manual_seed(0)
    images = torch.randn(32, 3, 224, 224, device="cuda")
    labels = torch.randint(0, 1000, (32,), device="cuda")
    losses = {}
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(1)
        model = build_model(CONFIG).cuda()
        optimizer = build_optimizer(model, OptimizerConfig(), global_batch_size=32)
        step = train_step(model, optimizer, images, labels, autocast_dtype=dtype)
        losses[dtype] = (step["loss_sum"] / step["count"]).item()
    assert torch.isfinite(torch.tensor(losses[torch.bfloat16]))
    assert losses[torch.bfloat16] == pytest.approx(losses[None], rel=2e-2)


def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    model = build_model(CONFIG).cuda().eval()
    images = torch.randn(8, 3, 224, 224, device="cuda")
    with torch.no_grad():
        plain = model(images)
        last = model.to(memory_format=torch.channels_last)(
            images.contiguous(memory_format=torch.channels_last)
        )
    torch.testing.assert_close(last, plain, rtol=1e-4, atol=1e-4)
