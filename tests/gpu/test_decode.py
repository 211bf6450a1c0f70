"""The `device` decode place on a GPU: nvJPEG's batched decode gives the pixels the CPU decode
gives (up to the IDCT's rounding), on the device, ready for the on-device augmentation."""

import io

import numpy as np
import pytest
import torch

from workloads.alexnet.transforms import BatchTransform
from workloads.datasets.batch_decode import decode_batch
from workloads.datasets.photos import PhotoSynth

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _jpegs(count: int, size: int = 256) -> list[torch.Tensor]:
    """Photo-like JPEGs as `prepare` writes them (S x S, quality 90, 4:2:0)."""
    synth, files = PhotoSynth(seed=0), []
    for i in range(count):
        buffer = io.BytesIO()
        synth.render(np.random.default_rng([3, i]), size, size).save(buffer, "JPEG", quality=90)
        files.append(torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8))
    return files


def test_nvjpeg_batch_matches_the_cpu_decode():
    jpegs = _jpegs(16)
    on_gpu, on_cpu = decode_batch(jpegs, "cuda"), decode_batch(jpegs, "cpu")
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.uint8
    assert tuple(on_gpu.shape) == tuple(on_cpu.shape) == (16, 256, 256, 3)
    difference = (on_gpu.cpu().int() - on_cpu.int()).abs().float()
    assert difference.mean().item() < 2.0, difference.mean().item()  # IDCT rounding, not content
    inputs = BatchTransform(224, None).train(on_gpu, torch.arange(16), epoch=1)
    assert inputs.device.type == "cuda" and tuple(inputs.shape) == (16, 3, 224, 224)
