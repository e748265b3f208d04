"""Trace stores and a running server for the viewer tests."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.testclient import TestClient

from geodistil.config import RolloutSettings, TeacherConfig
from geodistil.data import DatasetSpec
from geodistil.generate import generate
from geodistil.store import SampleRange, StorageSpec, TraceStore, trace_name
from geodistil.trace import LatLon, Message, ToolCallRecord, Trace
from geodistil.viewer import create_app
from tests.helpers import free_port


def make_real_store(root: Path, samples: int = 8) -> TraceStore:
    """Traces of the demo dataset by the simulated teacher: real conversations, replayable images."""
    from geodistil.sim.demo_data import make_demo_dataset
    from geodistil.sim.server import SimConfig, SimServer

    data = make_demo_dataset(str(root / "data"), n=samples, seed=0)
    url = str(root / "traces")
    with SimServer(SimConfig(seed=0, tool_calls=3)) as sim:  # every tool shows up in 8 samples
        asyncio.run(generate(DatasetSpec(path=data), StorageSpec(url=url),
                             RolloutSettings(teacher=TeacherConfig(base_url=sim.base_url)),
                             SampleRange(num_samples=samples)))
    return TraceStore(url)


def synthetic_trace(sample: int, reward: float, tools: tuple[str, ...] = (), error: str | None = None,
                    turns: int = 1, failed_tool: bool = False) -> Trace:
    """A small trace without images, for index tests (its numbers need not be self-consistent)."""
    calls = [ToolCallRecord(index=i, turn=1, tool_name=t, success=not (failed_tool and i == 0),
                            error="boom" if failed_tool and i == 0 else None) for i, t in enumerate(tools)]
    return Trace(dataset_path="nowhere", dataset_fingerprint="f", sample_index=sample,
                 ground_truth=LatLon(lat=10, lon=20), prediction=None if error else LatLon(lat=11, lon=21),
                 reward_score=reward, distance_km=1000 * (1 - reward), num_turns=turns, error=error,
                 error_kind="teacher_error" if error else None, stop_reason="error" if error else "answered",
                 tool_calls_log=calls, messages=[Message(role="assistant", content="\\boxed{11, 21}")])


def write_synthetic(store: TraceStore, traces: list[Trace]) -> list[str]:
    return [store.write_trace(t) for t in traces]


def viewer_client(store: TraceStore) -> TestClient:
    """A test client of the viewer app that sends a Host it answers (TestClient's own, ``testserver``, is refused)."""
    return TestClient(create_app(store), base_url="http://localhost:8765")


@contextlib.contextmanager
def running_viewer(store: TraceStore) -> Iterator[str]:
    """The viewer app under uvicorn on a free loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the viewer did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


__all__ = ["make_real_store", "synthetic_trace", "write_synthetic", "viewer_client", "running_viewer", "trace_name"]
