"""`serve`: a model as a Ray Serve application on the current Ray cluster (the machine's shared
local Ray unless RAY_ADDRESS or a Ray job names one; refused where Ray Serve already runs),
answering on `serve.host:serve.port` until Ctrl-C (or `ray job stop`), then taken down."""

from __future__ import annotations

import contextlib
import logging
import signal
import time

from ray import serve
from ray.serve import Application

from orchestrator.common import logs
from orchestrator.common.errors import InputError
from orchestrator.common.paths import config_path
from orchestrator.common.ray_cluster import ensure_ray
from orchestrator.common.redact import redact_text
from orchestrator.config.experiment import load_config
from orchestrator.config.serve import ServeConfig
from orchestrator.serving.deployment import Classifier
from orchestrator.serving.model import OpenedModel, open_model

log = logging.getLogger(__name__)

APP_NAME = "alexnet"


def application(model: OpenedModel, config: ServeConfig) -> Application:
    """The Ray Serve application of `model`: its deployment with `config`'s replicas, resources
    and batching."""
    spec_json, weights = model.predictor.dump()
    return Classifier.options(**config.deployment_options()).bind(
        spec_json,
        weights,
        _shown(model.facts),
        config.max_batch_size,
        config.batch_wait_timeout_s,
        config.max_request_bytes,
    )


def app(args: dict) -> Application:
    """Ray Serve's application builder for its own config files (`serve run` / `serve deploy`,
    `import_path: orchestrator.serving.service:app`): `args` holds `model` (as `--model`), and
    optionally `config` (as `--config`) and `set` (a list of `--set` overrides). The file's
    `http_options` say where Ray Serve listens; `serve.*` sets the replicas and batching."""
    if "model" not in args:
        raise ValueError("args.model: missing; allowed: what serve --model takes")
    overrides = [str(value) for value in args.get("set", [])]
    given = args.get("config")
    config = load_config(config_path(given) if given else None, overrides)
    return application(open_model(args["model"], config.inference, overrides), config.serve)


def start_service(model: OpenedModel, config: ServeConfig) -> str:
    """Deploy `model` with `config`; returns the URL of its /predict once every replica is up."""
    ensure_ray()
    running = serve.status()
    if running.applications or running.proxies:  # (Ray Serve is one per cluster)
        raise InputError(
            f"serve: Ray Serve already runs on this Ray cluster (applications: "
            f"{', '.join(running.applications) or 'none'}; another `serve`, say), and a second "
            "would replace its application and not listen where asked: stop it first, or "
            "serve on a Ray of its own (RAY_ADDRESS=local)"
        )
    # Ray Serve's INFO lines (every replica added, every route, an access line per request)
    # show at -v; its warnings and errors always
    serve_logs = {"log_level": "INFO" if logs.level() <= logging.DEBUG else "WARNING"}
    logging.getLogger("ray.serve").setLevel(serve_logs["log_level"])
    serve.start(http_options={"host": config.host, "port": config.port}, logging_config=serve_logs)
    serve.run(
        application(model, config), name=APP_NAME, route_prefix="/", logging_config=serve_logs
    )
    return f"http://{config.host}:{config.port}/predict"


def serve_until_interrupted(model: OpenedModel, config: ServeConfig) -> None:
    """Serve `model` until Ctrl-C (also one while it starts) or SIGTERM (`ray job stop`), then
    take the application and Ray Serve down."""
    try:
        url = start_service(model, config)
        signal.signal(signal.SIGTERM, _interrupt)  # (after ray.init, which sets its own)
        spec = model.predictor.spec
        print(
            f"serving {redact_text(model.uri)} ({len(spec.classes)} classes, top {spec.top_k}"
            f"{', ten crops' if spec.ten_crop else ''}) at {url}\n"
            f"  try: curl -s -X POST -H 'Content-Type: image/jpeg' --data-binary @IMAGE.jpg {url}"
            "\n  Ctrl-C stops it",
            flush=True,
        )
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        log.info("stopping: Ray Serve takes the application down")
        serve.shutdown()
        raise KeyboardInterrupt(f"stopped serving {redact_text(model.uri)}") from None
    except InputError:
        raise  # (refused before starting anything)
    except BaseException:
        # (a start that failed, or SIGTERM during it: on the machine's shared Ray, which other
        # commands may keep running, Ray Serve's detached controller would otherwise stay)
        with contextlib.suppress(Exception):
            serve.shutdown()
        raise


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _shown(facts: dict) -> dict:
    """A response's facts of the model, without secrets in its URIs."""
    return {key: redact_text(str(value)) for key, value in facts.items()}
