"""Teacher limits and rejections through ``geodistil run`` (the Prefect flow), against ``geodistil sim``."""

import os
import subprocess
import sys

import pytest

from geodistil.store import TraceStore
from tests.helpers import sim_process, sim_stats


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from geodistil.sim.demo_data import make_demo_dataset

    return make_demo_dataset(str(tmp_path_factory.mktemp("d") / "demo"), n=8, seed=13)


def geodistil_run(run_file, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {})}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([sys.executable, "-m", "geodistil.cli", "run", "--config", str(run_file), *flags],
                          capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_a_flow_run_ends_overflowing_conversations_and_a_rerun_sends_nothing(demo, tmp_path):
    out = tmp_path / "traces"
    # native tools are not in the prompt text: one image fits 1600 tokens, two do not
    with sim_process("--profile", "openai-reasoning", "--max-context-tokens", "1600", "--tool-calls", "1") as url:
        run_file = tmp_path / "run.yaml"
        run_file.write_text(f"dataset: {demo}\noutput: {out}\nteacher: {{base_url: '{url}', model: o3}}\n"
                            "tools: {enabled: [image_zoom_in_tool]}\nsamples: {num_samples: 6}\n")
        first = geodistil_run(run_file, "--max-tokens", "64")
        sent = sim_stats(url)["requests"]
        again = geodistil_run(run_file, "--max-tokens", "64")
        # each run's check of the model before its first sample is one 1-token request (the sim does
        # not list "o3"); the samples of the re-run send nothing
        assert sim_stats(url)["requests"] == sent + 1
    assert first.returncode == 0 and again.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    traces = [t for _, t in TraceStore(str(out)).iter_traces()]
    assert [t.stop_reason for t in traces] == ["context_length"] * 6 and all(t.ok for t in traces)
    assert sent == 1 + 3 * 6 == 1 + sum(t.usage.requests for t in traces)  # no retry by the client or Prefect


@pytest.mark.slow
def test_a_flow_run_stops_when_the_teacher_rejects_the_first_samples_alike(demo, tmp_path):
    # a bad key or model stops the run before its first sample (tests/test_preflight.py); a request
    # every sample gets refused alike (the sim refuses to stream with a plain 400) stops it after 3
    run_file = tmp_path / "run.yaml"
    with sim_process() as url:
        run_file.write_text(f"dataset: {demo}\noutput: {tmp_path / 'traces'}\n"
                            f"teacher: {{base_url: '{url}', model: geodistil-sim}}\n")
        result = geodistil_run(run_file, "--max-concurrency", "1", "--extra-body", '{"stream": true}')
        requests = sim_stats(url)["requests"]
    assert result.returncode == 1
    assert "stopped: the teacher rejected the first 3 samples alike (teacher_rejected:http_400)" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert requests == 3
