"""A dataset that cannot be used, or a sample range it cannot fill: one line saying what is
wrong and what to do, never a traceback, and never a run of zero samples."""

from __future__ import annotations

import datasets
import pytest
from typer.testing import CliRunner

from geodistil.cli import app
from geodistil.data import DatasetSpec, GeoDataset
from geodistil.errors import ConfigError
from geodistil.sim.demo_data import make_demo_dataset
from geodistil.sim.server import SimConfig, SimServer
from geodistil.store import SampleRange, TraceStore


@pytest.fixture(scope="module")
def demo3(tmp_path_factory) -> str:
    return make_demo_dataset(str(tmp_path_factory.mktemp("demo3") / "data"), n=3, seed=0)


def run(*args: str):
    """``geodistil run`` against a teacher nobody listens on: these runs must stop before asking it."""
    return CliRunner().invoke(app, ["run", *args, "--base-url", "http://127.0.0.1:9/v1"])


def empty_dataset(path) -> str:
    features = datasets.Features({"image": datasets.Image(), "lat": datasets.Value("float64"),
                                  "lon": datasets.Value("float64")})
    datasets.Dataset.from_dict({"image": [], "lat": [], "lon": []}, features=features).save_to_disk(str(path))
    return str(path)


def assert_one_line_error(result, starts: str) -> None:
    assert result.exit_code == 2 and type(result.exception) is SystemExit, result.output  # no crash
    assert result.stderr.startswith(f"error: {starts}") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output


def test_run_on_a_dataset_that_does_not_exist_says_so_in_one_line(tmp_path):
    result = run("--dataset", str(tmp_path / "nope"), "--output", str(tmp_path / "out"))
    assert_one_line_error(result, f"dataset {tmp_path / 'nope'} does not exist: give a datasets save_to_disk folder")


def test_run_on_an_empty_dataset_says_so_in_one_line(tmp_path):
    result = run("--dataset", empty_dataset(tmp_path / "empty"), "--output", str(tmp_path / "out"))
    assert_one_line_error(result, f"dataset {tmp_path / 'empty'} has no rows: point it at a dataset with samples")


def test_run_with_start_past_the_end_of_the_dataset_is_an_error(demo3, tmp_path):
    result = run("--dataset", demo3, "--start", "3", "--output", str(tmp_path / "out"))
    assert_one_line_error(result, "start 3 is past the end of the dataset (3 samples, indices 0 to 2): "
                                  "give a start below 3")
    assert not (tmp_path / "out" / "summary.json").exists()


def test_a_broken_saved_dataset_is_a_config_error_naming_it(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "dataset_info.json").write_text("{torn")
    with pytest.raises(ConfigError, match=rf"^dataset {tmp_path / 'broken'} cannot be opened \(\w+: .*\): give"):
        GeoDataset(DatasetSpec(path=str(tmp_path / "broken")))


def test_num_samples_beyond_the_end_says_how_many_will_run():
    samples = SampleRange(start=1, num_samples=10)
    assert samples.indices(3) == range(1, 3)
    assert samples.shortfall(3) == ("num_samples 10 from start 1 goes past the end of the dataset (3 samples): "
                                    "2 will run")
    assert SampleRange(start=1, num_samples=2).shortfall(3) is None


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.mark.slow  # a Prefect server and a real run: about a minute here
def test_run_with_num_samples_past_the_end_warns_in_one_line_and_runs_the_rest(demo3, tmp_path, prefect_api):
    out = str(tmp_path / "out")
    with SimServer(SimConfig(port=0, seed=1)) as sim:
        result = CliRunner().invoke(app, ["run", "--dataset", demo3, "--num-samples", "5", "--output", out,
                                          "--base-url", sim.base_url, "--model", "geodistil-sim", "--timeout", "20"])
    assert result.exit_code == 0, result.output
    assert ("warning: num_samples 5 from start 0 goes past the end of the dataset (3 samples): 3 will run"
            in result.stderr.splitlines())
    assert TraceStore(out).trace_names() == [f"trace_{i:05d}.json" for i in range(3)]
