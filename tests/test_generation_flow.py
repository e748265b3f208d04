"""The generation flow on Prefect: ordered traces, error handling, caching, resume, S3."""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from geodistil.store import TraceStore
from tests.helpers import free_port, sim_process, sim_stats


def run_cli(dataset: str, output: str, base_url: str, *extra: str, env: dict | None = None,
            wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    args = [sys.executable, "-m", "geodistil.cli", "run", "--dataset", dataset, "--output", output,
            "--base-url", base_url, "--model", "geodistil-sim", "--timeout", "20", *extra]
    env = {**os.environ, **(env or {})}
    env.pop("PREFECT_API_URL", None)  # the embedded default: Prefect's local ephemeral API
    if not wait:
        return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def demo200(tmp_path_factory):
    from geodistil.sim.demo_data import make_demo_dataset

    return make_demo_dataset(str(tmp_path_factory.mktemp("d") / "demo200"), n=200, seed=5)


def assert_complete_and_ordered(store: TraceStore, n: int) -> list:
    names = store.trace_names()
    assert names == [f"trace_{i:05d}.json" for i in range(n)]
    traces = [t for _, t in store.iter_traces()]
    assert all(not isinstance(t, Exception) for t in traces), [t for t in traces if isinstance(t, Exception)]
    return traces


@pytest.mark.slow
def test_flow_with_transient_errors_writes_every_trace_in_order(demo200, tmp_path):
    out = str(tmp_path / "traces")
    with sim_process("--rate-429", "0.1", "--rate-500", "0.05", "--rate-malformed", "0.05", "--seed", "7") as url:
        result = run_cli(demo200, out, url, "--max-concurrency", "32")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    store = TraceStore(out)
    traces = assert_complete_and_ordered(store, 200)
    summary = store.read_json("summary.json")
    assert summary["total"] == 200 == len(traces)
    assert summary["success"] == sum(t.ok for t in traces)
    assert summary["failed"] == sum(not t.ok for t in traces)
    assert summary["parse_success"] == sum(t.parse_success for t in traces if t.ok)
    assert summary["tool_calls"] == sum(len(t.tool_calls_log) for t in traces)
    assert any(c.error and "not valid JSON" in c.error for t in traces for c in t.tool_calls_log)
    assert sum(t.usage.retries for t in traces) > 0
    manifest = store.read_json("manifest.json")
    assert [e["name"] for e in manifest["traces"]] == store.trace_names()


@pytest.mark.slow
def test_a_second_run_takes_every_sample_from_the_cache(demo200, tmp_path):
    out = str(tmp_path / "traces")
    with sim_process("--seed", "8") as url:
        first = run_cli(demo200, out, url, "--num-samples", "30")
        assert first.returncode == 0, first.stderr[-3000:]
        before = sim_stats(url)["requests"]
        second = run_cli(demo200, out, url, "--num-samples", "30")
        assert second.returncode == 0, second.stderr[-3000:]
        assert sim_stats(url)["requests"] == before  # zero requests for cached samples
        third = run_cli(demo200, out, url, "--num-samples", "5", "--refresh")
        assert third.returncode == 0
        assert sim_stats(url)["requests"] > before
    assert_complete_and_ordered(TraceStore(out), 30)


@pytest.mark.slow
def test_a_killed_run_resumes_without_requesting_finished_samples(demo200, tmp_path):
    out = tmp_path / "traces"
    n = 120
    port = free_port()  # the teacher's URL is part of the cache key: the resumed run must use the same one
    with sim_process("--latency", "0.3", "--seed", "9", port=port) as url:
        proc = run_cli(demo200, str(out), url, "--num-samples", str(n), "--max-concurrency", "8", wait=False)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(list(out.glob("trace_*.json"))) < n // 2:
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = {p.name for p in out.glob("trace_*.json")}
    assert n // 2 <= len(finished) < n
    with sim_process("--latency", "0.05", "--seed", "9", port=port) as url:
        result = run_cli(demo200, str(out), url, "--num-samples", str(n), "--max-concurrency", "8")
        assert result.returncode == 0, result.stderr[-3000:]
        requests = sim_stats(url)["requests"]
    store = TraceStore(str(out))
    traces = assert_complete_and_ordered(store, n)
    regenerated = [t for name, t in zip(store.trace_names(), traces) if name not in finished]
    assert requests == sum(t.usage.requests for t in regenerated)
    assert not list(out.glob("*.tmp-*"))


@pytest.mark.slow
def test_the_same_run_writes_to_s3(demo200, tmp_path):
    from moto.server import ThreadedMotoServer
    import s3fs

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint}
    try:
        os.environ.update(env)
        fs = s3fs.S3FileSystem(endpoint_url=endpoint)
        bucket = f"traces-{uuid.uuid4().hex[:8]}"  # moto's state outlives a server within one process
        fs.mkdir(bucket)
        with sim_process("--seed", "10") as url:
            result = run_cli(demo200, f"s3://{bucket}/run1", url, "--num-samples", "25", env=env)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            before = sim_stats(url)["requests"]
            again = run_cli(demo200, f"s3://{bucket}/run1", url, "--num-samples", "25", env=env)
            assert again.returncode == 0
            assert sim_stats(url)["requests"] == before
        store = TraceStore(f"s3://{bucket}/run1", {"endpoint_url": endpoint})
        assert_complete_and_ordered(store, 25)
        assert store.read_json("summary.json")["total"] == 25
        assert fs.ls(f"{bucket}/run1/.prefect-results")
    finally:
        for key in env:
            os.environ.pop(key, None)
        server.stop()


def test_the_first_sample_starts_alone_until_its_request_is_out():
    """Its request goes first and alone anyway; started among hundreds, it would wait behind each one's start."""
    import asyncio

    from flows.generation import _run_on_flow_loop
    from geodistil.generate import FailFast
    from geodistil.trace import TraceRecord

    started: list[int] = []

    async def main() -> list[TraceRecord]:
        out = asyncio.Event()

        async def sample_task(job, return_state: bool) -> int:
            index = job.unquote()
            started.append(index)
            if index == 0:
                for _ in range(20):  # the first sample's start: thread trips, the task run's states
                    await asyncio.sleep(0)
                assert started == [0]  # nobody else started meanwhile
                out.set()  # its request is on its way
                await asyncio.sleep(0.01)
            return index

        async def finish(job, state: int) -> TraceRecord:
            return TraceRecord(name=f"trace_{state:05d}.json", sample_index=state, rollout_index=0, ok=True)

        return await _run_on_flow_loop(sample_task, list(range(8)), 4, finish, FailFast(), out)

    records = asyncio.run(main())
    assert [r.sample_index for r in records] == list(range(8))  # in job order
    assert started[0] == 0 and sorted(started) == list(range(8))
