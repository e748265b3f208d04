"""``geodistil run`` against a store others can write to, with a key in the URL, killed, or with failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from geodistil.store import RunLock, TraceStore
from tests.helpers import sim_process, sim_stats


def run_cli(dataset: str, output: str, base_url: str, *extra: str, env: dict | None = None,
            wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    args = [sys.executable, "-m", "geodistil.cli", "run", "--dataset", dataset, "--output", output,
            "--base-url", base_url, "--model", "geodistil-sim", "--timeout", "20", *extra]
    env = {**os.environ, **(env or {})}
    env.pop("PREFECT_API_URL", None)  # the CLI's own temporary server
    if not wait:
        return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> str:
    from geodistil.sim.demo_data import make_demo_dataset

    return make_demo_dataset(str(tmp_path_factory.mktemp("d") / "demo"), n=12, seed=6)


@pytest.mark.slow  # a CLI process: a minute on a busy machine
def test_a_run_on_a_store_another_run_holds_stops_at_once_naming_it(demo, tmp_path):
    out = tmp_path / "traces"
    with sim_process() as url, RunLock(TraceStore(str(out)), owner="flow run 'the-first-run'"):
        result = run_cli(demo, str(out), url, "--num-samples", "3")
        requests = sim_stats(url)["requests"]
    assert result.returncode == 1
    assert "is in use by flow run 'the-first-run'" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert requests == 0 and not list(out.glob("trace_*.json"))


class MakesADirectory:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


@pytest.mark.slow
def test_a_crafted_pickle_among_the_results_runs_nothing_when_the_run_resumes(demo, tmp_path):
    from prefect._internal.result_records import ResultRecord, ResultRecordMetadata
    from prefect.serializers import PickleSerializer

    out, marker = tmp_path / "traces", tmp_path / "code-ran"
    with sim_process() as url:
        assert run_cli(demo, str(out), url, "--num-samples", "3").returncode == 0
        results = list((out / ".prefect-results").iterdir())
        assert results
        for path in results:  # what someone with write access to the store could put there
            path.write_bytes(ResultRecord(metadata=ResultRecordMetadata(serializer=PickleSerializer()),
                                          result=MakesADirectory(str(marker))).serialize())
        before = sim_stats(url)["requests"]
        again = run_cli(demo, str(out), url, "--num-samples", "3")
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert sim_stats(url)["requests"] == before  # a miss, answered by the traces in the store
    assert not marker.exists()


@pytest.mark.slow
def test_credentials_in_the_base_url_are_recorded_nowhere(demo, tmp_path):
    out, home = tmp_path / "traces", tmp_path / "prefect-home"
    with sim_process() as url:
        secret_url = url.replace("http://", "http://alice:hunter2-secret@")
        # the teacher client refuses a URL with user info next to its API key: every sample fails, and is recorded
        result = run_cli(demo, str(out), secret_url, "--num-samples", "3", env={"PREFECT_HOME": str(home)})
    assert TraceStore(str(out)).read_trace("trace_00000.json").teacher.base_url == url, result.stdout[-3000:]
    recorded = [p for root in (out, home) for p in root.rglob("*") if p.is_file()]
    assert any(p.name.startswith("prefect.db") for p in recorded)  # flow-run parameters and logs
    assert [p for p in recorded if b"hunter2-secret" in p.read_bytes()] == []
    assert "hunter2-secret" not in result.stdout + result.stderr


@pytest.mark.slow
def test_the_end_of_a_run_shows_the_first_failures_and_where_all_are_listed(demo, tmp_path):
    import datasets

    ds = datasets.load_from_disk(demo).select(range(4))
    features = ds.cast_column("image", datasets.Image(decode=False)).features
    rows = ds.cast_column("image", datasets.Image(decode=False)).to_list()
    rows[1]["latitude"] = None
    rows[2]["longitude"] = 250.0
    datasets.Dataset.from_list(rows, features=features).save_to_disk(str(tmp_path / "bad"))
    out = tmp_path / "traces"
    with sim_process() as url:
        result = run_cli(str(tmp_path / "bad"), str(out), url)
    assert "trace_00001.json: sample_error: sample 1: latitude is missing" in result.stdout
    assert "trace_00002.json: sample_error: sample 2: longitude 250.0 is out of range" in result.stdout
    assert f"2 failed samples in all: the rows with \"ok\": false in {out}/manifest.json" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert [row["error"] for row in manifest["traces"] if not row["ok"]] == [
        "sample 1: latitude is missing", "sample 2: longitude 250.0 is out of range [-180, 180]"]


def prefect_server_under(pid: int) -> psutil.Process | None:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    return next((c for c in children if "prefect.server.api.server:create_app" in " ".join(c.cmdline())), None)


@pytest.mark.slow
def test_killing_a_run_with_sigkill_stops_its_prefect_server(demo, tmp_path):
    out = tmp_path / "traces"
    with sim_process("--latency", "1.0") as url:
        cli = run_cli(demo, str(out), url, "--max-concurrency", "2", wait=False)
        server = None
        for _ in range(3000):  # until the run is under way (its server up, traces being written)
            server = server or prefect_server_under(cli.pid)
            if server is not None and list(out.glob("trace_*.json")):
                break
            time.sleep(0.1)
        assert server is not None
        os.kill(cli.pid, signal.SIGKILL)  # the CLI alone, not its process group
        cli.wait()
        gone, alive = psutil.wait_procs([server], timeout=60)
        for process in alive:  # clean up what the test found, then fail
            process.kill()
    assert alive == []
