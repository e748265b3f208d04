"""Cost and budget: every trace priced, the run's cost in its summary, --max-cost stops starting samples."""

import asyncio

import pytest

from geodistil.config import GenerationConfig, RolloutSettings, TeacherConfig
from geodistil.data import DatasetSpec
from geodistil.errors import ConfigError
from geodistil.generate import generate
from geodistil.prices import Price, price_of
from geodistil.sim.demo_data import make_demo_dataset
from geodistil.sim.server import SimConfig, SimServer
from geodistil.store import SampleRange, StorageSpec, TraceStore
from geodistil.trace import Usage


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "data"
    make_demo_dataset(str(path), n=20, seed=0)
    return str(path)


def run(dataset: str, out, base_url: str, n: int, **teacher) -> dict:
    settings = RolloutSettings(teacher=TeacherConfig(base_url=base_url, model="gpt-4o", timeout_s=20, **teacher),
                               generation=GenerationConfig(max_concurrency=2))
    return asyncio.run(generate(DatasetSpec(path=dataset), StorageSpec(url=str(out)), settings,
                                SampleRange(num_samples=n)))


def test_a_dated_model_name_is_priced_as_its_family_and_cached_tokens_at_the_cached_rate():
    price = price_of("gpt-4o-2024-08-06")
    assert price == price_of("gpt-4o") and price_of("gpt-4o-mini") != price
    usage = Usage(prompt_tokens=1_000_000, cached_tokens=400_000, completion_tokens=100_000)
    assert price.cost(usage) == pytest.approx(0.6 * 2.50 + 0.4 * 1.25 + 0.1 * 10.0)


def test_a_self_hosted_model_has_no_price_unless_the_run_gives_one():
    assert TeacherConfig(model="Qwen2.5-VL-7B").price() is None
    assert TeacherConfig(model="Qwen2.5-VL-7B", price_input=0.2, price_output=0.6).price() == Price(
        input=0.2, output=0.6)


def test_the_summary_cost_is_the_sum_of_the_traces_costs(dataset, tmp_path):
    with SimServer(SimConfig(port=0, tool_calls=1)) as sim:
        summary = run(dataset, tmp_path, sim.base_url, 6)
    costs = [t.cost_usd for _, t in TraceStore(str(tmp_path)).iter_traces()]
    assert len(costs) == 6 and all(c > 0 for c in costs)
    assert summary["cost_usd"] == pytest.approx(sum(costs), rel=1e-12)


def test_max_cost_stops_starting_samples_and_a_rerun_with_a_larger_budget_completes(dataset, tmp_path):
    with SimServer(SimConfig(port=0, tool_calls=1)) as sim:
        first = run(dataset, tmp_path, sim.base_url, 20, max_cost_usd=0.05)
        second = run(dataset, tmp_path, sim.base_url, 20, max_cost_usd=1.0)
    assert first["stopped"].startswith("stopped: the budget of $0.05 would be passed")
    assert first["total"] < 20 and first["failed"] == 0 and first["cost_usd"] <= 0.05
    assert "stopped" not in second and second["success"] == 20 and second["reused"] == first["total"]


def test_geodistil_run_prices_a_self_hosted_teacher_from_the_flags_and_shows_the_cost(dataset, tmp_path):
    import subprocess
    import sys

    with SimServer(SimConfig(port=0, tool_calls=0)) as sim:
        result = subprocess.run([sys.executable, "-m", "geodistil.cli", "run", "--dataset", dataset, "--output",
                                 str(tmp_path), "--base-url", sim.base_url, "--model", "geodistil-sim",
                                 "--num-samples", "3", "--price-input", "1000", "--price-output", "1000"],
                                capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    total = sum(t.cost_usd for _, t in TraceStore(str(tmp_path)).iter_traces())
    assert total > 0 and f"${total:.4f}" in result.stdout


@pytest.mark.slow
def test_geodistil_run_stops_at_max_cost_and_the_same_command_with_a_larger_budget_completes(dataset, tmp_path):
    import json
    import subprocess
    import sys

    with SimServer(SimConfig(port=0, tool_calls=1)) as sim:
        def run_cli(budget: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "geodistil.cli", "run", "--dataset", dataset, "--output",
                                   str(tmp_path), "--base-url", sim.base_url, "--model", "gpt-4o", "--num-samples",
                                   "20", "--max-concurrency", "2", "--max-cost", budget],
                                  capture_output=True, text=True, timeout=300)
        stopped = run_cli("0.03")
        stopped_summary = json.loads((tmp_path / "summary.json").read_text())
        first_costs = [t.cost_usd for _, t in TraceStore(str(tmp_path)).iter_traces()]
        completed = run_cli("1")
    assert stopped.returncode == 1 and "stopped: the budget of $0.03 would be passed" in stopped.stdout
    # every sample started within the budget as estimated (the spend, in flight ones at the mean so far)
    assert stopped_summary["total"] < 20 and stopped_summary["cost_usd"] - max(first_costs) <= 0.03
    assert completed.returncode == 0, completed.stdout[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    costs = [t.cost_usd for _, t in TraceStore(str(tmp_path)).iter_traces()]
    assert summary["total"] == 20 and summary["cost_usd"] == pytest.approx(sum(costs), rel=1e-12)


def test_a_price_file_prices_its_models_and_a_flag_still_wins(tmp_path):
    from geodistil.cli.generate import _priced_from_file

    path = tmp_path / "prices.yaml"
    path.write_text("my-vlm: {input: 0.2, output: 0.8}\nother: {input: 9, output: 9}\n")
    teacher = _priced_from_file(TeacherConfig(model="my-vlm-2025-01"), path)
    assert teacher.price() == Price(input=0.2, output=0.8)
    flagged = _priced_from_file(TeacherConfig(model="my-vlm", price_input=0.3, price_output=1.0), path)
    assert flagged.price() == Price(input=0.3, output=1.0)


@pytest.mark.parametrize("text, problem", [("my-vlm: {input: cheap, output: 1}", "price file: "),
                                           ("other: {input: 1, output: 1}", "has no price for the model 'my-vlm'")])
def test_a_bad_price_file_is_one_line(tmp_path, text, problem):
    from geodistil.cli.generate import _priced_from_file

    path = tmp_path / "prices.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        _priced_from_file(TeacherConfig(model="my-vlm"), path)
    assert problem in str(caught.value) and "\n" not in str(caught.value)
