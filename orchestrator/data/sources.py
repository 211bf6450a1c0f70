"""The data a run names, opened: a prepared dataset as it is, or a raw source (an image tree,
ImageNet, the generated demo set) prepared first, once, and reused afterwards."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from orchestrator.common import ray_cluster
from orchestrator.common.errors import ConfigError
from orchestrator.common.redact import redact_text
from orchestrator.data.config import DataConfig
from orchestrator.data.prepare import (
    PrepareConfig,
    PrepareResult,
    complete_output,
    list_source,
    planned_output,
    run_prepare,
)
from orchestrator.data.prepared import PreparedData, open_prepared
from workloads.datasets.generated import replaceable
from workloads.datasets.synthetic import generate

log = logging.getLogger(__name__)

DEFAULT_SYNTHETIC_ROOT = "data/synthetic"
DEFAULT_PREPARED_PARENT = "data/prepared"


def raw_source(config: DataConfig, prepare: PrepareConfig) -> PrepareConfig | None:
    """The `prepare` job a raw source needs before training (None for a prepared source).

    Generates the synthetic dataset first (once). Needs no Ray, so bad paths fail early.
    """
    if config.source == "prepared":
        if config.root is None:
            raise ConfigError("data.root: required (the output of `prepare`, or set data.source)")
        return None
    if config.source == "synthetic":
        try:
            root = generate(Path(config.root or DEFAULT_SYNTHETIC_ROOT).resolve(), config.synthetic)
        except ValueError as error:  # a folder of the user's: never overwritten
            raise ConfigError(f"data.root (data.source: synthetic): {error}") from None
        source = "imagefolder"
    else:
        if config.root is None:
            raise ConfigError(f"data.root: required when data.source is '{config.source}'")
        root, source = Path(config.root).expanduser().resolve(), config.source
    return dataclasses.replace(prepare, source=source, root=str(root), out=config.prepared_root)


def find_prepared(config: DataConfig, prepare: PrepareConfig) -> tuple[PreparedData | None, str]:
    """The prepared data `config` names when it exists already, generating and preparing
    nothing (a dry run); else None and what a run would do first."""
    if config.source == "synthetic":
        root = Path(config.root or DEFAULT_SYNTHETIC_ROOT).resolve()
        try:
            missing = replaceable(root, dataclasses.asdict(config.synthetic))
        except ValueError as error:
            raise ConfigError(f"data.root (data.source: synthetic): {error}") from None
        if missing:
            parent = config.prepared_root or f"{DEFAULT_PREPARED_PARENT}/"
            return (
                None,
                f"the demo's images would be generated in {root}, then prepared in {parent}",
            )
        config = dataclasses.replace(config, source="imagefolder", root=str(root))
    raw = raw_source(config, prepare)
    if raw is None:
        return open_prepared(config.root), ""
    train, val = list_source(raw)
    out, key = planned_output(raw, {"train": train, "val": val}, DEFAULT_PREPARED_PARENT)
    if complete_output(out, key):
        return open_prepared(out.uri), ""
    images = len(train) + len(val)
    return None, f"{raw.root}: {images} images would be prepared first, in {redact_text(out.uri)}"


def prepare_source(prepare: PrepareConfig, splits) -> PrepareResult:
    """Run (or find already done) the preparation of a raw source; needs a running Ray."""
    return run_prepare(prepare, default_parent=DEFAULT_PREPARED_PARENT, splits=splits)


def report_prepare(result: PrepareResult) -> None:
    out = redact_text(result.out)
    if result.skipped:
        log.info(
            f"prepared data: {out} (already complete: {result.images['train']} training / "
            f"{result.images['val']} validation images)"
        )
        return
    resumed = result.total - result.processed
    earlier = f"; {resumed} done by an earlier run" if resumed else ""
    print(
        f"prepare: {sum(result.images.values())} images ({result.images['train']} train, "
        f"{result.images['val']} val) in {out}; {result.rejects} rejected (see "
        f"{redact_text(result.rejects_file)}). This run: {result.processed} files in "
        f"{result.seconds:.1f} s, {result.images_per_second:.0f} images/s, "
        f"{result.images_per_second_per_core:.0f} images/s per CPU core ({result.cpus:g} "
        f"cores){earlier}",
        flush=True,
    )


def check_rejects(result: PrepareResult, config: PrepareConfig) -> None:
    if not result.complete:
        raise ConfigError(
            f"prepare: {result.rejects} of {result.total} files could not be read "
            f"({result.rejects / result.total:.2%}), more than prepare.max_reject_fraction "
            f"({config.max_reject_fraction:g}); they are listed in {result.rejects_file}"
        )


def open_data(config: DataConfig, prepare: PrepareConfig, check=None) -> PreparedData:
    """The prepared data `config` names, preparing a raw source first (once). Starts Ray.

    Bad paths fail before Ray starts, and so does `check(data)` on prepared data (a raw source
    is checked once it is prepared).
    """
    raw = raw_source(config, prepare)
    if raw is None:
        data = open_prepared(config.root)
        if check is not None:
            check(data)
        ray_cluster.ensure_ray()
        return data
    splits = list_source(raw)
    ray_cluster.ensure_ray()
    result = prepare_source(raw, splits)
    report_prepare(result)
    check_rejects(result, raw)
    data = open_prepared(result.out)
    if check is not None:
        check(data)
    return data
