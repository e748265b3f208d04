"""The spine end to end: demo data, the simulated teacher over HTTP, rollouts, scores, replay."""

import asyncio
import json
import subprocess
import sys

import datasets
import pytest

from geodistil.config import GenerationConfig, RolloutSettings, TeacherConfig
from geodistil.data import DatasetSpec
from geodistil.generate import generate
from geodistil.store import StorageSpec, TraceStore
from tests.helpers import sim_process, sim_stats


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geodistil.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "data"
    result = cli("demo-data", str(path), "--n", "20", "--seed", "3")
    assert result.returncode == 0, result.stderr
    return str(path)


def settings(base_url: str, **generation) -> RolloutSettings:
    return RolloutSettings(teacher=TeacherConfig(base_url=base_url, max_retries=6, backoff_base_s=0.05, timeout_s=20),
                           generation=GenerationConfig(max_concurrency=8, **generation))


def test_twenty_samples_are_rolled_out_scored_and_replay_verified(demo_dataset, tmp_path):
    out = tmp_path / "traces"
    with sim_process("--seed", "1") as base_url:
        summary = asyncio.run(generate(DatasetSpec(path=demo_dataset), StorageSpec(url=str(out)), settings(base_url)))
        stats = sim_stats(base_url)
    store = TraceStore(str(out))
    names = store.trace_names()
    assert names == [f"trace_{i:05d}.json" for i in range(20)]
    traces = [t for _, t in store.iter_traces()]
    assert all(t.ok and t.stop_reason in ("answered", "max_turns") for t in traces)
    assert all(t.distance_km < 20000 or not t.parse_success for t in traces)
    assert sum(t.parse_success for t in traces) >= 15
    assert any(t.tool_calls_log for t in traces)
    code_calls = [c for t in traces for c in t.tool_calls_log if c.tool_name == "python_code_tool"]
    assert any(c.success for c in code_calls), "some python_code_tool calls should run in the sandbox"
    assert summary["total"] == 20 and summary["success"] == 20
    assert stats["requests"] == sum(t.usage.requests for t in traces)
    replay = cli("replay", str(out), "--verify")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "verified 20 traces" in replay.stdout


def test_a_typical_trace_is_small_and_holds_no_image_bytes(demo_dataset, tmp_path):
    with sim_process("--seed", "2") as base_url:
        asyncio.run(generate(DatasetSpec(path=demo_dataset), StorageSpec(url=str(tmp_path)), settings(base_url)))
    raw = {n: (tmp_path / n).read_text() for n in TraceStore(str(tmp_path)).trace_names()}
    typical = [text for text in raw.values()
               if len(json.loads(text)["tool_calls_log"]) == 2 and json.loads(text)["num_turns"] == 3]
    assert typical, "the simulated teacher should produce some 3-turn, 2-tool-call conversations"
    for text in typical:
        assert len(text.encode()) < 10 * 1024
    for text in raw.values():
        assert "base64" not in text and "data:image" not in text and "iVBOR" not in text and "/9j/" not in text


def test_bad_rows_become_error_traces_and_the_rest_succeed(demo_dataset, tmp_path):
    ds = datasets.load_from_disk(demo_dataset).select(range(6))
    rows = ds.cast_column("image", datasets.Image(decode=False)).to_list()
    rows[1]["image"] = {"bytes": b"\x89PNG broken", "path": None}
    rows[3]["latitude"] = None
    rows[4]["longitude"] = 250.0
    bad = datasets.Dataset.from_list(rows, features=ds.cast_column("image", datasets.Image(decode=False)).features)
    bad.save_to_disk(str(tmp_path / "bad"))
    out = tmp_path / "out"
    with sim_process("--seed", "3") as base_url:
        summary = asyncio.run(generate(DatasetSpec(path=str(tmp_path / "bad")), StorageSpec(url=str(out)),
                                       settings(base_url)))
    traces = {t.sample_index: t for _, t in TraceStore(str(out)).iter_traces()}
    assert sorted(traces) == list(range(6))
    failed = {i for i, t in traces.items() if not t.ok}
    assert failed == {1, 3, 4}
    assert "image cannot be decoded" in traces[1].error and "sample 1" in traces[1].error
    assert "latitude is missing" in traces[3].error
    assert "longitude 250.0 is out of range" in traces[4].error
    assert all(traces[i].error_kind == "sample_error" for i in failed)
    assert summary["failed"] == 3 and summary["success"] == 3
