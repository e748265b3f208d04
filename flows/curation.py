"""Curation flows (aggregate, filter, split, export) and the pipeline that chains them after generation.

Every flow takes trace store locations as ``StorageSpec`` and its settings as a pydantic
model with field limits, so the Prefect UI renders a form; each runs one task of
``tasks.curation``, whose work is a plain ``geodistil`` function callable without Prefect.

The pipeline runs each stage as a subflow, so the UI shows where the time went. A failed
stage is retried by running the pipeline again: generation's per-sample tasks are cached by
an explicit key (dataset and settings fingerprints, store, sample), so no trace is generated
twice, and the stages after it are recomputed from the stores.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.generation import generate_flow
from geodistil.config import GenerationConfig, ImageConfig, TeacherConfig, ToolsConfig
from geodistil.curate import FilterConfig, SplitConfig
from geodistil.data import DatasetSpec
from geodistil.export import ExportConfig
from geodistil.store import SampleRange, StorageSpec
from tasks.curation import aggregate_traces, export_traces, filter_traces, split_traces


@flow(name="geodistil-aggregate", log_prints=False)
def aggregate_flow(storage: StorageSpec = StorageSpec(), difficulty_from: StorageSpec | None = None,
                   report: bool = True) -> dict[str, Any]:
    """Summarise a trace store into ``summary.json`` and a self-contained ``report.html``.

    ``difficulty_from``: a split store whose ratings bucket this store's traces (a split store
    itself is summarised per bucket without it).
    """
    return aggregate_traces(storage, difficulty_from, report)


@flow(name="geodistil-filter", log_prints=False)
def filter_flow(source: StorageSpec = StorageSpec(), dest: StorageSpec = StorageSpec(url="out/curated"),
                config: FilterConfig = FilterConfig()) -> dict[str, Any]:
    """Keep the traces that pass every quality rule; ``filter.json`` says how many each rule removed."""
    return filter_traces(source, dest, config)


@flow(name="geodistil-split", log_prints=False)
def split_flow(source: StorageSpec = StorageSpec(url="out/curated"), dest: StorageSpec = StorageSpec(url="out/split"),
               config: SplitConfig = SplitConfig(), difficulty_source: StorageSpec | None = None) -> dict[str, Any]:
    """Split traces into easy / medium / hard by each sample's pass rate (ratings from ``difficulty_source``)."""
    return split_traces(source, dest, config, difficulty_source)


@flow(name="geodistil-export", log_prints=False)
def export_flow(source: StorageSpec = StorageSpec(url="out/curated"), dest: StorageSpec = StorageSpec(url="out/export"),
                config: ExportConfig = ExportConfig()) -> dict[str, Any]:
    """Write an SFT-ready dataset (TRL messages + images, or LLaMA-Factory ShareGPT) with replayed images."""
    return export_traces(source, dest, config)


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("total", "success", "failed", "unreadable", "parse_success_rate", "median_distance_km", "mean_geoscore",
            "country_accuracy", "accuracy")
    return {k: summary.get(k) for k in keys}


@flow(name="geodistil-pipeline", log_prints=False)
async def pipeline_flow(
    dataset: DatasetSpec,
    storage: StorageSpec = StorageSpec(url="out/traces"),
    curated: StorageSpec = StorageSpec(url="out/curated"),
    split_to: StorageSpec = StorageSpec(url="out/split"),
    export_to: StorageSpec | None = None,
    samples: SampleRange = SampleRange(),
    teacher: TeacherConfig = TeacherConfig(),
    generation: GenerationConfig = GenerationConfig(),
    tools: ToolsConfig = ToolsConfig(),
    image: ImageConfig = ImageConfig(),
    filtering: FilterConfig = FilterConfig(),
    splitting: SplitConfig = SplitConfig(),
    export: ExportConfig = ExportConfig(),
    chunk_size: int = 1000,
    refresh: bool = False,
) -> dict[str, Any]:
    """generate -> aggregate -> filter -> split (-> export when ``export_to`` is set), one stage per subflow."""
    logger = get_run_logger()
    generated = await generate_flow(dataset=dataset, storage=storage, samples=samples, teacher=teacher,
                                    generation=generation, tools=tools, image=image, chunk_size=chunk_size,
                                    refresh=refresh)
    summary = aggregate_flow(storage)
    filtered = filter_flow(storage, curated, filtering)
    split = split_flow(curated, split_to, splitting, difficulty_source=storage)
    split_summary = aggregate_flow(split_to)
    result: dict[str, Any] = {
        "generated": {"total": generated["total"], "success": generated["success"]},
        "summary": _brief(summary),
        "filter": {"kept": filtered["kept"], "total": filtered["total"], "removed": filtered["removed"]},
        "split": split["counts"],
        "split_summary": {b: _brief(s) for b, s in split_summary.get("by_difficulty", {}).items()},
    }
    if export_to is not None:
        exported = export_flow(curated, export_to, export)
        result["export"] = {"rows": exported["rows"], "skipped": exported["skipped"],
                            "verified": exported.get("verification", {}).get("ok")}
    logger.info("pipeline done: %s", result)
    return result
