"""The sections of a trained model's use: `inference` (how it answers: top-k, ten crops, the
largest image it decodes), `serve` (the Ray Serve application: where it listens, its replicas
and their resources, request batching) and `predict` (batch inference with Ray Data)."""

from __future__ import annotations

from dataclasses import dataclass

from workloads.alexnet.config import DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class InferenceConfig:
    top_k: int = 5  # class names (with probabilities) per image; at most the model's classes
    ten_crop: bool = False  # the paper's ten views averaged (10x the compute); false: centre crop
    # larger images are refused before decoding (a decompression bomb costs a 4xx, not memory):
    # 40 M pixels by default, 120 MB decoded
    max_image_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        if self.top_k < 1:
            raise ValueError(f"top_k: got {self.top_k}; allowed: an integer >= 1")
        if self.max_image_pixels < 1:
            raise ValueError(f"max_image_pixels: got {self.max_image_pixels}; allowed: >= 1")


@dataclass(frozen=True)
class ServeConfig:
    # where Ray Serve's HTTP proxy listens: loopback only; 0.0.0.0 opens it to the network
    host: str = "127.0.0.1"
    port: int = 8000  # the HTTP port (one Ray Serve per Ray cluster listens on one)
    # replicas: fixed at min_replicas when max_replicas equals it, else Ray Serve's autoscaler
    # keeps target_ongoing_requests per replica between the two bounds
    min_replicas: int = 1
    max_replicas: int = 1  # > min_replicas: autoscaling between the two
    target_ongoing_requests: float = 8  # autoscaling: requests in flight per replica it aims at
    num_cpus_per_replica: float = 1  # Ray's CPU request of each replica (decoding, and CPU models)
    num_gpus_per_replica: float = 0  # e.g. 1 (or 0.5: two replicas share a GPU)
    # Ray Serve's request batching: up to max_batch_size images in one forward pass, waiting at
    # most batch_wait_timeout_s for a batch to fill; 1 turns batching off
    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.005  # seconds a batch waits to fill before it runs
    max_request_bytes: int = 20 * 2**20  # a larger body is refused (413) before it is read
    # requests a replica takes at once (they wait in it for a batch); beyond, Ray Serve queues
    # them at the proxy and retries with backoff, which costs seconds under load
    max_ongoing_requests: int = 128

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: got {self.port}; allowed: 0 to 65535")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"min_replicas, max_replicas: got {self.min_replicas}, {self.max_replicas}; "
                "allowed: 1 <= min_replicas <= max_replicas"
            )
        if self.max_batch_size < 1 or self.batch_wait_timeout_s < 0:
            raise ValueError(
                f"max_batch_size, batch_wait_timeout_s: got {self.max_batch_size}, "
                f"{self.batch_wait_timeout_s}; allowed: an integer >= 1, seconds >= 0"
            )
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests: got {self.max_ongoing_requests}; allowed: >= "
                f"max_batch_size ({self.max_batch_size}), or no batch ever fills"
            )
        for name in ("num_cpus_per_replica", "num_gpus_per_replica", "max_request_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: got {getattr(self, name)}; allowed: >= 0")

    def deployment_options(self) -> dict:
        """Ray Serve's options for the model's deployment."""
        options = {
            "ray_actor_options": {
                "num_cpus": self.num_cpus_per_replica,
                "num_gpus": self.num_gpus_per_replica,
            },
            "max_ongoing_requests": self.max_ongoing_requests,
        }
        if self.max_replicas == self.min_replicas:
            return {**options, "num_replicas": self.min_replicas}
        autoscaling = {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }
        return {**options, "autoscaling_config": autoscaling}


@dataclass(frozen=True)
class PredictConfig:
    batch_size: int = 64  # images per forward pass
    num_actors: int = 1  # model-holding actors (Ray Data's actor pool); more on a larger cluster
    num_cpus_per_actor: float = 1  # leave CPUs for the read and decode tasks
    num_gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else 0

    def __post_init__(self):
        if self.batch_size < 1 or self.num_actors < 1:
            raise ValueError(
                f"batch_size, num_actors: got {self.batch_size}, {self.num_actors}; allowed: >= 1"
            )
