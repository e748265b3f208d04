"""Fail fast: a teacher that cannot work stops ``geodistil run`` before the first sample, in one line."""

import os
import subprocess
import sys

import pytest

from geodistil.sim.demo_data import make_demo_dataset
from geodistil.sim.server import SIM_MODEL, SimConfig, SimServer
from tests.helpers import free_port


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "data"
    make_demo_dataset(str(path), n=4, seed=0)
    return str(path)


def run(dataset: str, out, base_url: str, *args: str, key: str = "right") -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFLIGHT_KEY": key}
    return subprocess.run([sys.executable, "-m", "geodistil.cli", "run", "--dataset", dataset, "--output", str(out),
                           "--base-url", base_url, "--api-key-env", "PREFLIGHT_KEY", "--timeout", "20", *args],
                          capture_output=True, text=True, timeout=600, env=env)


def assert_stopped_in_one_line(result: subprocess.CompletedProcess, out, words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr
    assert not out.exists() or not list(out.glob("trace_*.json"))


def test_a_closed_port_stops_the_run_naming_the_refused_connection(dataset, tmp_path):
    result = run(dataset, tmp_path / "t", f"http://127.0.0.1:{free_port()}/v1", "--model", SIM_MODEL)
    assert_stopped_in_one_line(result, tmp_path / "t", "unreachable at http://127.0.0.1")
    assert "connection refused" in result.stderr


def test_a_base_url_without_an_api_behind_it_stops_the_run(dataset, tmp_path):
    with SimServer(SimConfig(port=0)) as sim:
        result = run(dataset, tmp_path / "t", f"{sim.url}/wrong", "--model", SIM_MODEL)
        stats = sim.stats()
    assert_stopped_in_one_line(result, tmp_path / "t", "check --base-url")
    assert stats["requests"] == 0  # the sim's chat route was never reached


def test_a_rejected_key_stops_the_run_before_any_chat_request(dataset, tmp_path):
    with SimServer(SimConfig(port=0, api_key="right")) as sim:
        result = run(dataset, tmp_path / "t", sim.base_url, "--model", SIM_MODEL, key="wrong")
        stats = sim.stats()
    assert_stopped_in_one_line(result, tmp_path / "t", "rejected the API key from $PREFLIGHT_KEY")
    assert "wrong" not in result.stderr and stats["requests"] == 0


def test_an_unknown_model_stops_the_run_naming_the_models_served(dataset, tmp_path):
    with SimServer(SimConfig(port=0, known_models_only=True)) as sim:
        result = run(dataset, tmp_path / "t", sim.base_url, "--model", "gpt-nonesuch")
        stats = sim.stats()
    assert_stopped_in_one_line(result, tmp_path / "t", f"does not serve the model 'gpt-nonesuch' (HTTP 404); "
                                                         f"it serves: {SIM_MODEL}")
    assert stats["requests"] == stats["unknown_model"] == 1  # the 1-token probe, then nothing


def test_a_model_the_server_lists_costs_no_chat_request_to_check(dataset, tmp_path):
    with SimServer(SimConfig(port=0, known_models_only=True)) as sim:
        result = run(dataset, tmp_path / "t", sim.base_url, "--model", SIM_MODEL, "--num-samples", "2")
        stats = sim.stats()
    assert result.returncode == 0, result.stdout + result.stderr
    assert stats["unknown_model"] == 0 and stats["requests"] == stats["ok"]
