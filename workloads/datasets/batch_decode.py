"""A batch of JPEGs decoded on a torch device: nvJPEG's batched decode on a GPU, libjpeg-turbo
on a CPU, through TorchCodec (torchvision's image decoding, deprecated since torchvision 0.29,
where TorchCodec is not installed: the GPU checks run with torch and torchvision alone)."""

from __future__ import annotations

import warnings

import torch


def decode_batch(jpegs: list[torch.Tensor], device: torch.device | str) -> torch.Tensor:
    """1-D uint8 tensors of JPEG files (on the CPU) -> uint8 (N, H, W, 3) RGB on `device`, in
    one call: nvJPEG decodes the whole batch on a CUDA device. All images must share one size
    (a prepared shard's do). The result is an NHWC view of NCHW memory, as the transforms take
    it."""
    device = torch.device(device)
    where = device if device.type == "cuda" else torch.device("cpu")
    return torch.stack(_decode_jpeg(jpegs, where)).permute(0, 2, 3, 1)  # N x (3, H, W) ->


def _decode_jpeg(jpegs: list[torch.Tensor], where: torch.device) -> list[torch.Tensor]:
    try:
        from torchcodec.decoders import decode_jpeg
    except (ImportError, OSError, RuntimeError):  # not installed, or built for another torch
        from torchvision.io import ImageReadMode
        from torchvision.io import decode_jpeg as torchvision_decode_jpeg

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
            return torchvision_decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=where)
    return decode_jpeg(list(jpegs), mode="RGB", device=where)
