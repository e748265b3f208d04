"""Runs that live with the teacher's limits: the shared admission controller and circuit breaker,
over HTTP against the simulated teacher's own limiter and outages (geodistil.admission)."""

import asyncio
import re
import subprocess
import sys
import threading
import time

import pytest

from geodistil import admission
from geodistil.config import GenerationConfig, RolloutSettings, TeacherConfig
from geodistil.data import DatasetSpec
from geodistil.generate import generate
from geodistil.sim.demo_data import make_demo_dataset
from geodistil.sim.server import SIM_MODEL, SimConfig, SimServer
from geodistil.store import SampleRange, StorageSpec, TraceStore


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "data"
    make_demo_dataset(str(path), n=200, seed=0)
    return str(path)


def settings(base_url: str, concurrency: int = 16, **teacher) -> RolloutSettings:
    teacher = {"backoff_base_s": 0.2, "backoff_max_s": 2.0, "timeout_s": 20, **teacher}
    return RolloutSettings(teacher=TeacherConfig(base_url=base_url, model=SIM_MODEL, **teacher),
                           generation=GenerationConfig(max_concurrency=concurrency))


def run(dataset: str, out, rollout_settings: RolloutSettings, n: int) -> tuple[dict, list[dict]]:
    """The run's summary and the snapshots of this process's controllers at its end."""
    async def go() -> tuple[dict, list[dict]]:
        summary = await generate(DatasetSpec(path=dataset), StorageSpec(url=str(out)), rollout_settings,
                                 SampleRange(num_samples=n))
        url = rollout_settings.teacher.base_url
        return summary, [a.snapshot() for a in admission.controllers() if a.where == url]
    return asyncio.run(go())


def outage_once_running(sim: SimServer, seconds: float) -> threading.Thread:
    """Refuse connections for ``seconds`` as soon as the run's first requests arrive."""
    def wait_then_refuse() -> None:
        while sim.stats()["requests"] < 5:
            time.sleep(0.1)
        sim.refuse_connections(seconds)
    thread = threading.Thread(target=wait_then_refuse, daemon=True)
    thread.start()
    return thread


def test_the_conversations_that_wait_for_the_first_request_then_go_out_together(dataset, tmp_path):
    # the first request goes alone (a refused parameter is learnt once); the 31 conversations that
    # queued behind it must then be sent together, not one after another (a bug that held the
    # lock through each queued request and cost 256 x 2 s at the start of a 256-wide run)
    with SimServer(SimConfig(port=0, tool_calls=0, latency=0.4)) as sim:
        summary, _ = run(dataset, tmp_path, settings(sim.base_url, concurrency=32), 64)
        stats = sim.stats()
    assert summary["success"] == 64 and stats["requests"] == 64
    assert stats["max_in_flight"] >= 31


def test_an_announced_request_limit_is_kept_with_under_two_percent_of_requests_refused(dataset, tmp_path):
    with SimServer(SimConfig(port=0, rpm_limit=600, tool_calls=0, latency=0.05)) as sim:
        summary, _ = run(dataset, tmp_path, settings(sim.base_url), 60)
        stats = sim.stats()
    assert summary["success"] == 60
    assert stats["429"] < 0.02 * stats["requests"]


def test_an_unannounced_limit_is_learnt_from_its_429s_to_under_one_and_a_half_requests_per_reply(dataset, tmp_path):
    with SimServer(SimConfig(port=0, rpm_limit=600, announce_limits=False, tool_calls=0, latency=0.05)) as sim:
        summary, _ = run(dataset, tmp_path, settings(sim.base_url), 60)
        stats = sim.stats()
    assert summary["success"] == 60 and stats["429"] >= 1  # the limit was met, and learnt
    assert stats["requests"] / stats["ok"] < 1.5


def test_stray_429s_are_waited_out_by_their_own_requests_and_throttle_nothing(dataset, tmp_path):
    # one answer in ten refused at random: no limit to learn, no pace, no cut in concurrency
    with SimServer(SimConfig(port=0, rate_429=0.1, tool_calls=0, seed=5)) as sim:
        summary, (snapshot,) = run(dataset, tmp_path, settings(sim.base_url, concurrency=16), 80)
        stats = sim.stats()
    assert summary["success"] == 80 and stats["429"] >= 3
    assert snapshot["rpm"] is None and snapshot["limit"] == 16


def test_a_retry_after_of_a_day_waits_no_longer_than_backoff_max(dataset, tmp_path):
    with SimServer(SimConfig(port=0, rate_429=0.3, retry_after=86400, tool_calls=0, seed=2)) as sim:
        summary, _ = asyncio.run(asyncio.wait_for(asyncio.to_thread(
            run, dataset, tmp_path, settings(sim.base_url, backoff_max_s=0.5), 10), timeout=120))
    assert summary["success"] == 10


@pytest.mark.slow
def test_a_refused_connection_outage_costs_no_sample_and_probes_one_at_a_time(dataset, tmp_path):
    outage_s = 90.0  # the case: 90 s of refused connections in the middle of a 200-sample run
    with SimServer(SimConfig(port=0, tool_calls=1, latency=0.1)) as sim:
        outage = outage_once_running(sim, outage_s)
        summary, (snapshot,) = run(dataset, tmp_path, settings(sim.base_url, concurrency=8, backoff_max_s=5.0), 200)
        outage.join()
    assert summary["success"] == 200 and summary["failed"] == 0
    # backoff 0.2, 0.4, ... then one probe every 5 s: never a stream of connection attempts
    assert 1 <= snapshot["probes"] <= outage_s / 5 + 6


def test_an_outage_past_max_outage_stops_starting_samples_and_a_rerun_completes(dataset, tmp_path):
    sim = SimServer(SimConfig(port=0, tool_calls=0)).start()
    url = sim.base_url
    sim.stop()  # the port is closed: every connection is refused
    summary, _ = run(dataset, tmp_path, settings(url, concurrency=4, max_outage_s=1.0), 40)
    assert summary["stopped"].startswith(f"teacher unreachable at {url} since ")
    assert summary["stopped"].endswith(": connection refused")
    assert summary["total"] <= 4 and {t.error_kind for _, t in TraceStore(str(tmp_path)).iter_traces()} == {
        "teacher_unreachable:connection_refused"}
    with SimServer(SimConfig(port=int(url.split(":")[-1].split("/")[0]), tool_calls=0)):
        again, _ = run(dataset, tmp_path, settings(url, concurrency=4), 40)
    assert again["success"] == 40 and "stopped" not in again


@pytest.mark.slow
def test_geodistil_run_stops_in_one_line_after_max_outage_and_the_same_command_completes(dataset, tmp_path):
    with SimServer(SimConfig(port=0, tool_calls=1, latency=0.2)) as sim:
        command = [sys.executable, "-m", "geodistil.cli", "run", "--dataset", dataset, "--output", str(tmp_path),
                   "--base-url", sim.base_url, "--model", SIM_MODEL, "--num-samples", "30", "--max-concurrency", "4",
                   "--max-outage", "3"]
        outage = outage_once_running(sim, 20.0)
        stopped = subprocess.run(command, capture_output=True, text=True, timeout=300)
        outage.join()
        again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 1
    assert re.search(rf"teacher unreachable at {re.escape(sim.base_url)} since \d\d:\d\d: connection refused",
                     stopped.stdout)
    assert "Traceback" not in stopped.stdout + stopped.stderr
    assert again.returncode == 0, again.stdout[-2000:]
