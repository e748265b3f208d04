"""``runner="workers"``: one generation run's chunks as flow runs picked up by two Prefect process
workers, writing to S3; one worker killed in the middle of a chunk. The run still ends with every
trace in order, one manifest written by the parent, and no finished sample generated again."""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from geodistil.config import GenerationConfig, TeacherConfig
from geodistil.data import DatasetSpec
from geodistil.store import SampleRange, StorageSpec
from tests.helpers import loopback_s3, sim_process, sim_stats
from tests.prefect_server import prefect_cli, prefect_server, stop

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
POOL = "geodistil"
N, CHUNK, CONCURRENCY, MAX_TURNS = 24, 6, 2, 2


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A real server and the generate-chunk deployment of prefect.yaml on a process pool."""
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as env:
        pool = prefect_cli(env, "work-pool", "create", POOL, "--type", "process", "--overwrite", cwd=REPO)
        assert pool.returncode == 0, pool.stdout + pool.stderr
        deploy = prefect_cli(env, "--no-prompt", "deploy", "--name", "generate-chunk", cwd=REPO)
        assert deploy.returncode == 0, deploy.stdout[-5000:] + deploy.stderr[-5000:]
        yield env


@pytest.fixture()
def s3(monkeypatch) -> Iterator[dict]:
    with loopback_s3(monkeypatch) as options:
        yield options


def start_worker(env: dict[str, str], where: Path, name: str) -> subprocess.Popen:
    where.mkdir(parents=True, exist_ok=True)
    env = {**env, **{k: v for k, v in os.environ.items() if k.startswith("AWS_")},
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "2"}
    with open(where / f"{name}.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--name", name,
                                 "--limit", "1"], env=env, cwd=where, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def kill_tree(proc: subprocess.Popen) -> None:
    """What losing a machine does to a worker: it and its flow run's process die at once."""
    for p in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def test_a_run_over_two_workers_survives_losing_one_mid_chunk_with_no_sample_generated_twice(
        server, s3, tmp_path):
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.generation import generate_flow
    from flows.server import drain_services
    from geodistil.sim.demo_data import make_demo_dataset

    dataset = make_demo_dataset(str(tmp_path / "demo"), n=N, seed=5)
    storage = StorageSpec(url="s3://traces-bucket/scale-run", storage_options=s3)
    store = storage.store()
    workers = [start_worker(server, tmp_path / "workers", f"worker-{i}") for i in range(2)]
    outcome: dict = {}
    try:
        with temporary_settings({PREFECT_API_URL: server["PREFECT_API_URL"]}), \
                sim_process("--latency", "0.3") as url:
            def run() -> None:
                try:
                    outcome["summary"] = asyncio.run(generate_flow(
                        dataset=DatasetSpec(path=dataset), storage=storage, samples=SampleRange(num_samples=N),
                        teacher=TeacherConfig(base_url=url, model="geodistil-sim"),
                        generation=GenerationConfig(max_concurrency=CONCURRENCY, max_turns=MAX_TURNS),
                        chunk_size=CHUNK, runner="workers", parallel_chunks=2))
                except BaseException as exc:  # noqa: BLE001  # reported by the main thread
                    outcome["error"] = exc

            parent = threading.Thread(target=contextvars.copy_context().run, args=(run,))  # the API URL with it
            parent.start()
            # wait for a worker in the middle of a chunk: its flow run's process alive, some traces written
            deadline, victim = time.monotonic() + 300, None
            while victim is None and time.monotonic() < deadline and parent.is_alive():
                busy = [w for w in workers if psutil.Process(w.pid).children(recursive=True)]
                if busy and len(store.trace_names()) >= 2:
                    victim = busy[0]
                time.sleep(0.2)
            assert victim is not None, f"no worker was seen running a chunk: {outcome}"
            kill_tree(victim)
            before = {name: trace.trace_id for name, trace in store.iter_traces()}
            parent.join(600)
            assert not parent.is_alive()
            requests = sim_stats(url)["requests"]
            drain_services()  # this thread's events go to the module's server while it is there
    finally:
        for worker in workers:
            stop(worker)

    assert "error" not in outcome, outcome.get("error")
    assert outcome["summary"]["total"] == N
    names = store.trace_names()
    assert names == [f"trace_{i:05d}.json" for i in range(N)]
    traces = dict(store.iter_traces())
    assert all(traces[name].trace_id == trace_id for name, trace_id in before.items())  # finished: never redone
    assert 0 < len(before) < N
    # the only requests no trace accounts for: those of the samples in flight in the killed chunk
    lost = requests - sum(trace.usage.requests for trace in traces.values())
    assert 0 <= lost <= CONCURRENCY * MAX_TURNS
    assert [row["name"] for row in store.read_json("manifest.json")["traces"]] == names
    assert [n for n in store.list_names() if not n.startswith(("trace_", "."))] == ["manifest.json", "summary.json"]
    assert not store.fs.exists(store.path(".chunks"))  # the hand-off folder is gone
    with SyncPrefectClient(server["PREFECT_API_URL"]) as client:
        chunk_runs = [r for r in client.read_flow_runs() if r.name.startswith("chunk-")]
    states = sorted(r.state.type.value for r in chunk_runs)
    assert states == ["COMPLETED"] * (N // CHUNK) + ["CRASHED"]  # the lost chunk, started again once
