"""A batch of JPEGs decoded on a torch device: nvJPEG's batched decode on a GPU (torchvision),
libjpeg-turbo on a CPU. Pure torch + torchvision, so the GPU checks run it without Ray."""

from __future__ import annotations

import torch


def decode_batch(jpegs: list[torch.Tensor], device: torch.device | str) -> torch.Tensor:
    """1-D uint8 tensors of JPEG files (on the CPU) -> uint8 (N, H, W, 3) RGB on `device`, in
    one call: nvJPEG decodes the whole batch on a CUDA device. All images must share one size
    (a prepared shard's do). The result is an NHWC view of NCHW memory, as the transforms take
    it."""
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)
    where = device if device.type == "cuda" else "cpu"
    decoded = decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=where)  # N x (3, H, W)
    return torch.stack(decoded).permute(0, 2, 3, 1)
