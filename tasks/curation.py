"""Curation tasks: thin Prefect wrappers over ``geodistil.stats``, ``curate`` and ``export``.

Each task takes references (``StorageSpec``, config models), never traces, and returns the
small manifest its library function wrote. Files that are not readable traces are logged by
name as warnings; they never fail a task. The tasks are not cached: their inputs are stores
whose contents change under the same URL, and a stage is cheap next to generation, which is.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from geodistil.curate import FilterConfig, SplitConfig, read_difficulty, run_filter, run_split
from geodistil.export import ExportConfig, run_export
from geodistil.store import StorageSpec
from geodistil.stats import run_aggregate

_RETRY = {"retries": 2, "retry_delay_seconds": [2, 10], "cache_policy": NO_CACHE}


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run logger inside Prefect; a plain logger when a task is called as ``task.fn(...)``."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("geodistil.curation")


def _warn_unreadable(what: str, problems: list[str]) -> None:
    logger = _logger()
    for problem in problems[:50]:
        logger.warning("%s: skipped %s", what, problem)
    if len(problems) > 50:
        logger.warning("%s: ... and %d more (listed in its manifest)", what, len(problems) - 50)


@task(name="aggregate-traces", **_RETRY)
def aggregate_traces(storage: StorageSpec, difficulty_from: StorageSpec | None = None,
                     report: bool = True) -> dict[str, Any]:
    """``summary.json`` and ``report.html`` of a store; returns the summary."""
    difficulty = read_difficulty(difficulty_from.store()) if difficulty_from is not None else None
    summary = run_aggregate(storage.store(), difficulty, report=report)
    _warn_unreadable("aggregate", summary["unreadable_traces"])
    _logger().info("%s: %d traces, %d ok, parse rate %.2f, median %s km, GeoScore %s",
                          storage.url, summary["total"], summary["success"], summary["parse_success_rate"],
                          _round(summary["median_distance_km"]), _round(summary["mean_geoscore"]))
    return summary


@task(name="filter-traces", **_RETRY)
def filter_traces(source: StorageSpec, dest: StorageSpec, config: FilterConfig) -> dict[str, Any]:
    """Copy the traces every rule keeps; returns ``filter.json``."""
    manifest = run_filter(source.store(), dest.store(), config)
    _logger().info("kept %d of %d traces; removed by rule: %s", manifest["kept"], manifest["total"],
                          {k: v for k, v in manifest["removed"].items() if v})
    return manifest


@task(name="split-traces", **_RETRY)
def split_traces(source: StorageSpec, dest: StorageSpec, config: SplitConfig,
                 difficulty_source: StorageSpec | None = None) -> dict[str, Any]:
    """``easy/``, ``medium/``, ``hard/`` sub-stores; returns ``split.json``."""
    manifest = run_split(source.store(), dest.store(), config,
                         difficulty_source.store() if difficulty_source is not None else None)
    _warn_unreadable("split", manifest["unreadable_traces"])
    _logger().info("split: %s", {b: c["traces"] for b, c in manifest["counts"].items()})
    return manifest


@task(name="export-traces", **_RETRY)
def export_traces(source: StorageSpec, dest: StorageSpec, config: ExportConfig) -> dict[str, Any]:
    """A training-ready export, verified by loading it back; returns ``export-<format>.json``."""
    manifest = run_export(source.store(), dest.store(), config)
    _warn_unreadable("export", manifest["skipped_traces"])
    _logger().info("exported %d rows as %s to %s (%d skipped); verified: %s", manifest["rows"],
                          config.format, dest.url, manifest["skipped"],
                          manifest.get("verification", {}).get("ok", "not checked"))
    return manifest


def _round(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"
