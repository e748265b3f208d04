"""The curation tasks and flows on Prefect: thin wrappers, bad traces never fail a run, and a
failed pipeline stage is retried without generating anything again."""

from __future__ import annotations

import asyncio
import json

import pytest

from flows.curation import aggregate_flow, export_flow, filter_flow, pipeline_flow, split_flow
from geodistil.config import GenerationConfig, TeacherConfig
from geodistil.curate import FilterConfig, SplitConfig
from geodistil.data import DatasetSpec
from geodistil.export import ExportConfig
from geodistil.store import SampleRange, StorageSpec, TraceStore
from tasks.curation import aggregate_traces, filter_traces, split_traces
from tests.trace_sets import copy_store, damage

# the trace-set fixtures, shared by every module in the session (an import would make one per module)
pytest_plugins = ["tests.fixtures_traces"]


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def spec(path) -> StorageSpec:
    return StorageSpec(url=str(path))


def test_tasks_are_plain_functions_without_prefect(small_set, tmp_path):
    summary = aggregate_traces.fn(spec(small_set.url), report=False)
    assert summary["total"] == small_set.samples * small_set.rollouts
    kept = filter_traces.fn(spec(small_set.url), spec(tmp_path / "curated"), FilterConfig())
    split = split_traces.fn(spec(tmp_path / "curated"), spec(tmp_path / "split"), SplitConfig(),
                            difficulty_source=spec(small_set.url))
    assert sum(c["traces"] for c in split["counts"].values()) == kept["kept"]


def test_flow_parameters_are_forms_with_limits():
    schema = filter_flow.parameters.model_dump()["definitions"]["FilterConfig"]["properties"]
    assert schema["min_reward"]["anyOf"][0]["maximum"] == 1.0
    assert "description" in schema["dedup_similarity"]
    assert set(pipeline_flow.parameters.model_dump()["properties"]) >= {
        "dataset", "storage", "curated", "split_to", "export_to", "filtering", "splitting", "export"}


def test_each_curation_flow_runs_on_a_damaged_store_and_names_the_bad_files(prefect_api, small_set, tmp_path):
    src = copy_store(small_set, tmp_path / "damaged")
    broken = damage(src)
    summary = aggregate_flow(spec(src.root))
    assert summary["unreadable"] == 3 and all(any(n in p for p in summary["unreadable_traces"]) for n in broken)
    assert (tmp_path / "damaged" / "report.html").exists()
    filtered = filter_flow(spec(src.root), spec(tmp_path / "curated"), FilterConfig(min_reward=0.2))
    assert filtered["removed"]["readable"] == 3
    assert filtered["kept"] + sum(filtered["removed"].values()) == filtered["total"]
    split = split_flow(spec(tmp_path / "curated"), spec(tmp_path / "split"), SplitConfig(), spec(src.root))
    assert sum(c["traces"] for c in split["counts"].values()) == filtered["kept"]
    by_bucket = aggregate_flow(spec(tmp_path / "split"))
    assert by_bucket["total"] == filtered["kept"] and by_bucket["by_difficulty"]
    exported = export_flow(spec(tmp_path / "curated"), spec(tmp_path / "export"), ExportConfig(format="sharegpt"))
    assert exported["rows"] == filtered["kept"] and exported["verification"]["ok"]


def test_a_failed_stage_is_retried_without_generating_again(prefect_api, tmp_path):
    from geodistil.sim.demo_data import make_demo_dataset
    from geodistil.sim.server import SimConfig, SimServer

    dataset = DatasetSpec(path=make_demo_dataset(str(tmp_path / "data"), n=4, seed=21))
    traces, curated, split = spec(tmp_path / "traces"), spec(tmp_path / "curated"), spec(tmp_path / "split")
    with SimServer(SimConfig(port=0, seed=21)) as sim:
        params = dict(dataset=dataset, storage=traces, curated=curated, samples=SampleRange(num_samples=4),
                      teacher=TeacherConfig(base_url=sim.base_url), filtering=FilterConfig(min_reward=0.0),
                      generation=GenerationConfig(rollouts_per_sample=2, max_concurrency=8))
        with pytest.raises(Exception, match="is the source store"):  # the split stage is misconfigured
            asyncio.run(pipeline_flow(**params, split_to=curated))
        requests = sim.stats()["requests"]
        assert len(TraceStore(traces.url).trace_names()) == 8 and requests > 0
        result = asyncio.run(pipeline_flow(**params, split_to=split, export_to=spec(tmp_path / "export")))
        assert sim.stats()["requests"] == requests  # generation came from the cache
    assert result["generated"]["total"] == 8
    assert result["filter"]["kept"] + sum(result["filter"]["removed"].values()) == 8
    assert sum(c["traces"] for c in result["split"].values()) == result["filter"]["kept"]
    assert result["export"]["verified"] and result["export"]["rows"] == result["filter"]["kept"]
    assert json.loads((tmp_path / "split" / "summary.json").read_text())["by_difficulty"]
    assert (tmp_path / "traces" / "report.html").exists()
