"""The Ray Serve deployment that answers HTTP requests with a model's top-k classes.

- `POST /predict`: an image as the body (`image/*` or `application/octet-stream`), or as the
  first file of a `multipart/form-data` form -> `{"predictions": [{"label", "probability"}...],
  "model": {...}}`;
- `GET /healthz` -> `{"status": "ok", "model": {...}}`.
A bad request gets a JSON error and a 4xx status, and costs only itself: an empty body or one
that is no image 400, a body over `serve.max_request_bytes` or an image over
`inference.max_image_pixels` 413 (refused before it is read or decoded), another content type
415. Images are decoded in a thread per request; Ray Serve's batching (`@serve.batch`) gathers
them into one forward pass, up to `serve.max_batch_size` within `serve.batch_wait_timeout_s`.
"""

from __future__ import annotations

import asyncio

import numpy as np
import torch
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from workloads.alexnet.predictor import ImageTooLarge, Predictor

RAW_TYPES = ("image/", "application/octet-stream")
MULTIPART = "multipart/form-data"


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@serve.deployment(name="classifier")
class Classifier:
    def __init__(
        self,
        spec_json: str,
        weights: bytes,  # the predictor's files (`Predictor.dump`): tensors only, no pickled code
        model_facts: dict,
        max_batch_size: int,
        batch_wait_timeout_s: float,
        max_request_bytes: int,
    ):
        device = "cuda" if torch.cuda.is_available() else "cpu"  # a GPU when the replica has one
        self.predictor = Predictor.loads(spec_json, weights, device)
        self.model_facts = {**model_facts, "device": device}
        self.max_request_bytes = max_request_bytes
        self.predict_batch.set_max_batch_size(max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def __call__(self, request: Request) -> JSONResponse:
        path = request.url.path.rstrip("/")
        if path.endswith("/healthz") and request.method == "GET":
            return JSONResponse({"status": "ok", "model": self.model_facts})
        if not path.endswith("/predict"):
            return _error(404, "not found; allowed: POST /predict (an image), GET /healthz")
        if request.method != "POST":
            return _error(405, "POST an image to /predict")
        try:
            body = await self._image_bytes(request)
            image = await asyncio.to_thread(self.predictor.image, body)
        except BadRequest as error:
            return _error(error.status, str(error))
        except ImageTooLarge as error:
            return _error(413, str(error))
        except ValueError as error:
            return _error(400, f"not an image this model reads: {error}")
        labels, probabilities = await self.predict_batch(image)
        predictions = [
            {"label": label, "probability": float(p)} for label, p in zip(labels, probabilities)
        ]
        return JSONResponse({"predictions": predictions, "model": self.model_facts})

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def predict_batch(self, images: list[np.ndarray]) -> list[tuple[list[str], np.ndarray]]:
        """uint8 (S, S, 3) images, one per waiting request -> each one's (labels, probabilities)."""
        labels, probabilities = await asyncio.to_thread(self.predictor.top, np.stack(images))
        return list(zip(labels, probabilities))

    async def _image_bytes(self, request: Request) -> bytes:
        """The request's image, read no further than `max_request_bytes`."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_request_bytes:
            raise BadRequest(413, f"the body is {int(declared):,} bytes; allowed: {self._limit}")
        if kind.startswith(RAW_TYPES):
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > self.max_request_bytes:
                    raise BadRequest(413, f"the body is over the limit of {self._limit}")
            data = bytes(body)
        elif kind == MULTIPART:
            data = await self._first_file(request)
        else:
            raise BadRequest(
                415,
                f"content type {kind or '(none)'}; allowed: image/* or application/octet-stream "
                f"(the image as the body), or {MULTIPART} (the image as a file)",
            )
        if not data:
            raise BadRequest(400, "the request holds no image (an empty body)")
        return data

    async def _first_file(self, request: Request) -> bytes:
        try:
            async with request.form(max_files=1, max_fields=10) as form:
                for value in form.values():
                    if hasattr(value, "read"):
                        return await value.read()
        except Exception as error:  # noqa: BLE001 - a malformed form: the client's error
            raise BadRequest(400, f"a malformed {MULTIPART} body ({error})") from None
        raise BadRequest(400, f"the {MULTIPART} body holds no file")

    @property
    def _limit(self) -> str:
        return f"{self.max_request_bytes:,} bytes (serve.max_request_bytes)"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)
