"""The generation flow fanned out to a Dask cluster of worker processes, writing to S3: the same
traces, in the same order, as the run on one machine; one teacher client per worker; cache hits
across workers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from flows.server import drain_services
from geodistil.config import GenerationConfig, TeacherConfig
from geodistil.data import DatasetSpec
from geodistil.store import SampleRange, StorageSpec
from tests.helpers import loopback_s3, sim_process, sim_stats
from tests.prefect_server import prefect_server

pytestmark = pytest.mark.slow

N = 16
# what a trace says about the sample, the conversation and the answer (not timings or ids)
SAME = {"sample_index", "rollout_index", "dataset_fingerprint", "ground_truth", "final_answer", "prediction",
        "parse_success", "distance_km", "reward_score", "stop_reason", "messages", "num_turns"}


@pytest.fixture(scope="module")
def api_url(tmp_path_factory) -> Iterator[str]:
    """A real server: the Dask workers are other processes, and must reach the same API."""
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as env:
        yield env["PREFECT_API_URL"]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> str:
    from geodistil.sim.demo_data import make_demo_dataset

    return make_demo_dataset(str(tmp_path_factory.mktemp("data") / "demo"), n=N, seed=21)


@pytest.fixture()
def s3(monkeypatch) -> Iterator[dict]:
    with loopback_s3(monkeypatch) as options:
        yield options


def generate(dataset: str, storage: StorageSpec, base_url: str, **runner) -> dict:
    from flows.generation import generate_flow

    return asyncio.run(generate_flow(
        dataset=DatasetSpec(path=dataset), storage=storage, samples=SampleRange(num_samples=N),
        teacher=TeacherConfig(base_url=base_url, model="geodistil-sim"),
        generation=GenerationConfig(max_concurrency=8, rollouts_per_sample=1), **runner))


def teacher_clients_in_this_process() -> int:
    from tasks import contexts

    return len(contexts._contexts)


def test_a_dask_run_on_two_worker_processes_writing_to_s3_matches_the_local_run(
        api_url, demo_data, tmp_path, s3, monkeypatch):
    import s3fs
    from distributed import Client, LocalCluster
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", api_url)  # for the worker processes, as on a real cluster
    local_out = StorageSpec(url=str(tmp_path / "local"))
    dask_out = StorageSpec(url="s3://traces-bucket/dask-run", storage_options=s3)
    with temporary_settings({PREFECT_API_URL: api_url}), sim_process() as url:
        local = generate(demo_data, local_out, url)
        local_requests = sim_stats(url)["requests"]
        with LocalCluster(n_workers=2, processes=True, threads_per_worker=4, dashboard_address=None) as cluster, \
                Client(cluster) as dask_client:
            remote = generate(demo_data, dask_out, url, runner="dask", dask_address=cluster.scheduler_address)
            dask_requests = sim_stats(url)["requests"] - local_requests
            clients = dask_client.run(teacher_clients_in_this_process)
            again = generate(demo_data, dask_out, url, runner="dask", dask_address=cluster.scheduler_address)
            assert sim_stats(url)["requests"] == local_requests + dask_requests  # every sample a cache hit
        drain_services()

    assert dask_requests == local_requests
    assert sorted(clients.values()) == [1, 1]  # one teacher client per worker process, shared by its tasks
    local_store, dask_store = local_out.store(), dask_out.store()
    assert dask_store.trace_names() == local_store.trace_names() == [f"trace_{i:05d}.json" for i in range(N)]
    pairs = list(zip(local_store.iter_traces(), dask_store.iter_traces()))
    assert all(a.model_dump(include=SAME) == b.model_dump(include=SAME) for (_, a), (_, b) in pairs)
    assert [e["name"] for e in dask_store.read_json("manifest.json")["traces"]] == dask_store.trace_names()
    assert len(s3fs.S3FileSystem(**s3).ls("traces-bucket/dask-run/.prefect-results")) == N  # results beside traces
    for key in ("total", "success", "parse_success", "mean_distance_km", "accuracy", "tool_calls"):
        assert remote[key] == local[key] == again[key], key
