"""A trained AlexNet as a predictor of class names: encoded images (JPEG, PNG, ... bytes) or uint8
arrays in, the top-k class names with their probabilities out.

Preprocessing is the run's evaluation view: the short side resized to the prepared size and the
central square kept (`codec.decode_resize_center_crop`, as `prepare` does), then the centre crop
minus the training set's mean image (`BatchTransform.center`; the paper's ten crops on request).
A predictor is saved as a folder of plain files, read back without unpickling code:
`predictor.json` (the model's config, sizes, classes) and `weights.pt` (tensors only, read with
`weights_only=True`). Pure torch and numpy: serving, batch prediction and MLflow's pyfunc model
all load this one class.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from workloads.alexnet.config import DEFAULT_MAX_PIXELS, ModelConfig
from workloads.alexnet.model import build_model
from workloads.alexnet.transforms import BatchTransform
from workloads.datasets.codec import decode_resize_center_crop, resize_and_center_crop

FORMAT = 1  # predictor.json's layout
CONFIG_FILE, WEIGHTS_FILE = "predictor.json", "weights.pt"
INPUT_COLUMN = "image"  # a table's column of encoded images (MLflow's pyfunc model, predict)


@dataclass(frozen=True)
class PredictorSpec:
    """What a predictor is, apart from its weights (predictor.json)."""

    model: ModelConfig  # num_classes set
    prepared_size: int  # images are resized and centre-cropped to this square first
    classes: tuple[str, ...]  # class names in label order
    top_k: int = 5  # class names returned per image
    ten_crop: bool = False  # average the softmax over the paper's ten views, not the centre crop
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are refused before they are decoded
    facts: dict = dataclasses.field(default_factory=dict)  # provenance: run, epoch, data digest

    def __post_init__(self):
        if not 1 <= self.top_k <= len(self.classes):
            raise ValueError(f"top_k: got {self.top_k}; allowed: 1 to {len(self.classes)}")

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        return json.dumps({"format": FORMAT, **fields, "classes": list(self.classes)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> PredictorSpec:
        fields = json.loads(text)
        if fields.pop("format", None) != FORMAT:
            raise ValueError(f"{CONFIG_FILE}: not a predictor of format {FORMAT}")
        model = ModelConfig(**fields.pop("model"))
        return cls(model=model, classes=tuple(fields.pop("classes")), **fields)


class Predictor:
    """The model and its evaluation view on one device, in eval mode."""

    def __init__(
        self,
        spec: PredictorSpec,
        weights: dict[str, torch.Tensor],
        mean_image: np.ndarray | None,  # (S, S, 3) in [0, 1]; None: no mean subtraction
        device: torch.device | str = "cpu",
    ):
        self.spec, self.device = spec, torch.device(device)
        self.model = build_model(spec.model)
        self.model.load_state_dict(weights)
        self.model.eval().to(self.device)
        self.mean_image = None if mean_image is None else np.asarray(mean_image, np.float32)
        self.transform = BatchTransform(spec.model.input_size, self.mean_image)

    def replace(self, **changes) -> Predictor:
        """The same weights with other spec fields (`top_k`, `ten_crop`, `max_pixels`)."""
        spec = dataclasses.replace(self.spec, **changes)
        return Predictor(spec, self.model.state_dict(), self.mean_image, self.device)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        spec_json, weights = self.dump()
        (folder / CONFIG_FILE).write_text(spec_json)
        (folder / WEIGHTS_FILE).write_bytes(weights)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str = "cpu") -> Predictor:
        folder = Path(folder)
        spec_json = (folder / CONFIG_FILE).read_text()
        return cls.loads(spec_json, (folder / WEIGHTS_FILE).read_bytes(), device)

    def dump(self) -> tuple[str, bytes]:
        """(predictor.json's text, weights.pt's bytes): what `save` writes, `loads` reads."""
        weights = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        mean = None if self.mean_image is None else torch.from_numpy(self.mean_image)
        buffer = io.BytesIO()
        torch.save({"model": weights, "mean_image": mean}, buffer)
        return self.spec.to_json(), buffer.getvalue()

    @classmethod
    def loads(cls, spec_json: str, weights: bytes, device: torch.device | str = "cpu") -> Predictor:
        spec = PredictorSpec.from_json(spec_json)
        saved = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
        mean = saved["mean_image"]
        return cls(spec, saved["model"], None if mean is None else mean.numpy(), device)

    def image(self, item: bytes | np.ndarray) -> np.ndarray:
        """One encoded image or uint8 (H, W, 3) array -> uint8 (S, S, 3) at the prepared size.
        Raises ValueError for what is not a readable image, or one over `max_pixels`."""
        size = self.spec.prepared_size
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3:
                raise ValueError(
                    f"an array image must be uint8 (H, W, 3); got {item.dtype} {item.shape}"
                )
            self._check_pixels(item.shape[1], item.shape[0])
            return item if item.shape[:2] == (size, size) else resize_and_center_crop(item, size)
        data = bytes(item)
        if not data:
            raise ValueError("empty image")
        self._check_pixels(*_declared_size(data))
        return decode_resize_center_crop(data, size)

    def _check_pixels(self, width: int, height: int) -> None:
        if width * height > self.spec.max_pixels:
            raise ImageTooLarge(
                f"the image is {width} x {height} = {width * height:,} pixels, over the limit "
                f"of {self.spec.max_pixels:,}"
            )

    @torch.no_grad()
    def probabilities(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (N, S, S, 3) -> the softmax over classes (N, classes), float32 on the CPU."""
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.array(images))  # (a copy: decoded arrays may be read-only)
        images = images.to(self.device)
        if self.spec.ten_crop:
            views = self.transform.ten_crop(images)  # (N, 10, 3, C, C)
            logits = self.model(views.flatten(0, 1)).float()  # (N * 10, classes)
            return logits.softmax(1).view(len(images), 10, -1).mean(1).cpu()
        return self.model(self.transform.center(images).contiguous()).float().softmax(1).cpu()

    def top(self, images: np.ndarray | torch.Tensor) -> tuple[list[list[str]], np.ndarray]:
        """uint8 (N, S, S, 3) -> (the top-k class names per image, their probabilities (N, k))."""
        if len(images) == 0:
            return [], np.zeros((0, self.spec.top_k), np.float32)
        values, indices = self.probabilities(images).topk(self.spec.top_k, dim=1)
        labels = [[self.spec.classes[i] for i in row] for row in indices.tolist()]
        return labels, values.numpy()


class ImageTooLarge(ValueError):
    """An image over the predictor's `max_pixels` (a decompression bomb, or just too large)."""


def _declared_size(data: bytes) -> tuple[int, int]:
    """(width, height) from an encoded image's header, without decoding its pixels."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(f"the image is a decompression bomb ({error})") from None
    except UnidentifiedImageError:
        raise ValueError("not an image (no format PIL recognises)") from None
    except Exception as error:  # noqa: BLE001 - any codec failure: not an image we read
        raise ValueError(f"not a readable image ({type(error).__name__}: {error})") from None
