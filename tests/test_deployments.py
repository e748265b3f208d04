"""geodistil as a Prefect project: a real server, a process worker, `prefect deploy --all` from
prefect.yaml, runs created the way the UI's Run button creates them, and a failed run resumed
through the API the way the UI's Retry button does it."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Scheduled, State

from geodistil.store import TraceStore
from tests.helpers import free_port, sim_stats, wait_http
from tests.prefect_server import prefect_cli, prefect_server, stop

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
POOL = "geodistil"
SECRET_VALUE = "sk-geodistil-test-0123456789abcdef"


@contextlib.contextmanager
def sim_at(port: int, *args: str) -> Iterator[str]:
    """The simulated teacher on a given port (a retried run keeps its parameters, so its URL)."""
    proc = subprocess.Popen([sys.executable, "-m", "geodistil.cli", "sim", "--host", "127.0.0.1", "--port", str(port),
                             *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", timeout=60)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> str:
    from geodistil.sim.demo_data import make_demo_dataset

    return make_demo_dataset(str(tmp_path_factory.mktemp("data") / "demo"), n=24, seed=11)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict[str, str]]:
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as env:
        yield env


@pytest.fixture(scope="module")
def deployed(server) -> dict[str, str]:
    """The documented commands, from the repository root: a process pool, then every deployment."""
    pool = prefect_cli(server, "work-pool", "create", POOL, "--type", "process", "--overwrite", cwd=REPO)
    assert pool.returncode == 0, pool.stdout + pool.stderr
    deploy = prefect_cli(server, "--no-prompt", "deploy", "--all", cwd=REPO)
    assert deploy.returncode == 0, deploy.stdout[-5000:] + deploy.stderr[-5000:]
    return server


@pytest.fixture(scope="module")
def worker(deployed, tmp_path_factory) -> Iterator[None]:
    """A process worker started elsewhere than the checkout: the pull step must find the code."""
    where = tmp_path_factory.mktemp("worker")
    env = {**deployed, "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
    with open(where / "worker.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL],
                                env=env, cwd=where, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield
        finally:
            stop(proc)


@pytest.fixture()
def client(deployed) -> Iterator[SyncPrefectClient]:
    with SyncPrefectClient(deployed["PREFECT_API_URL"]) as c:
        yield c


def run_from_ui(client: SyncPrefectClient, deployment: str, parameters: dict) -> FlowRun:
    """What the UI's Run button sends: POST /deployments/{id}/create_flow_run with a Scheduled state."""
    deployment_id = client.read_deployment_by_name(deployment).id
    return client.create_flow_run_from_deployment(deployment_id, parameters=parameters,
                                                  state=Scheduled(message="Run from the Prefect UI"))


def retry_from_ui(client: SyncPrefectClient, flow_run_id) -> None:
    """What the UI's Retry button sends: the run's state set to Scheduled, named AwaitingRetry, forced."""
    client.set_flow_run_state(flow_run_id, State(type=StateType.SCHEDULED, name="AwaitingRetry",
                                                 message="Retry from the UI"), force=True)


def wait_final(client: SyncPrefectClient, flow_run_id, timeout: float = 420) -> FlowRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(1)
    raise TimeoutError(f"flow run {flow_run_id} still {run.state} after {timeout}s")


def demo_parameters(dataset: str, output: str, base_url: str, n: int, **teacher) -> dict:
    """The form as a user fills it: the deployment's defaults, with the dataset, output and teacher changed."""
    return {"dataset": {"path": dataset}, "storage": {"url": output}, "samples": {"start": 0, "num_samples": n},
            "teacher": {"base_url": base_url, "model": "geodistil-sim", **teacher},
            "generation": {"max_concurrency": 8}}


def deployments_in_prefect_yaml() -> list[str]:
    """``flow-name/deployment-name`` of every deployment the file declares."""
    from prefect.flows import load_flow_from_entrypoint

    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return [f"{load_flow_from_entrypoint(str(REPO / d['entrypoint'])).name}/{d['name']}" for d in config["deployments"]]


def test_deploy_all_creates_every_deployment_of_prefect_yaml_on_the_process_pool(client):
    names = deployments_in_prefect_yaml()
    assert {"geodistil-generate/generate", "geodistil-pipeline/pipeline", "geodistil-filter/filter"} <= set(names)
    assert len(client.read_deployments()) == len(names)
    assert client.read_work_pool(POOL).type == "process"
    for name in names:
        deployment = client.read_deployment_by_name(name)
        assert deployment.work_pool_name == POOL
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
        assert not deployment.schedules
    generate = client.read_deployment_by_name("geodistil-generate/generate")
    assert generate.parameters["dataset"]["path"] == "out/demo-data"  # the demo's defaults
    assert generate.parameters["teacher"]["base_url"] == "http://127.0.0.1:8000/v1"


def test_the_commented_pipeline_schedule_deploys_when_uncommented(deployed, client, tmp_path):
    text = (REPO / "prefect.yaml").read_text()
    example = [line.replace("  #   ", "  ", 1) for line in text.splitlines() if line.startswith("  #   ")]
    assert any("cron:" in line for line in example)
    head, found, tail = text.rpartition("  schedules: []\n")  # the pipeline's: the last deployment
    assert found
    # inactive here, so that the test server never starts a run of it at 02:00
    uncommented = "\n".join(example).replace("active: true", "active: false")
    (tmp_path / "prefect.yaml").write_text(head + uncommented + "\n" + tail)
    result = prefect_cli(deployed, "--no-prompt", "deploy", "--prefect-file", str(tmp_path / "prefect.yaml"),
                         "--name", "pipeline", cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    schedules = client.read_deployment_by_name("geodistil-pipeline/pipeline").schedules
    assert [(s.schedule.cron, s.schedule.timezone) for s in schedules] == [("0 2 * * *", "UTC")]


def test_a_pipeline_run_from_the_ui_writes_ordered_traces_and_curates_them_with_a_secret_block_key(
        client, worker, deployed, demo_data, tmp_path):
    from prefect.blocks.system import Secret

    asyncio.run(_save_secret(deployed["PREFECT_API_URL"], Secret))
    out = tmp_path / "traces"
    with sim_at(free_port()) as url:
        parameters = demo_parameters(demo_data, str(out), url, 12, api_key_secret="teacher-key")
        parameters |= {"curated": {"url": str(tmp_path / "curated")}, "split_to": {"url": str(tmp_path / "split")}}
        run = run_from_ui(client, "geodistil-pipeline/pipeline", parameters)
        final = wait_final(client, run.id)
        assert final.state.type == StateType.COMPLETED, final.state
    store = TraceStore(str(out))
    assert store.trace_names() == [f"trace_{i:05d}.json" for i in range(12)]
    assert store.read_json("summary.json")["total"] == 12
    assert all(t.ok for _, t in store.iter_traces())
    assert (tmp_path / "curated" / "filter.json").exists() and (tmp_path / "split" / "split.json").exists()
    # the key was resolved inside the run and went nowhere else
    assert SECRET_VALUE not in str(client.read_flow_run(run.id).parameters)
    logs = client.read_logs()
    assert logs and not any(SECRET_VALUE in log.message for log in logs)
    assert not any(SECRET_VALUE in p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())


async def _save_secret(api_url: str, secret_cls) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        await secret_cls(value=SECRET_VALUE).save("teacher-key", overwrite=True)


def test_the_secret_block_key_reaches_the_teacher_client(deployed):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from geodistil.config import RolloutSettings, TeacherConfig
    from tasks.contexts import close_shared_contexts, shared_context

    async def client_key() -> str:
        from prefect.blocks.system import Secret

        await Secret(value=SECRET_VALUE).save("teacher-key", overwrite=True)
        ctx = await shared_context(RolloutSettings(teacher=TeacherConfig(api_key_secret="teacher-key")))
        try:
            return ctx.teacher._client.api_key
        finally:
            await close_shared_contexts()

    with temporary_settings({PREFECT_API_URL: deployed["PREFECT_API_URL"]}):
        assert asyncio.run(client_key()) == SECRET_VALUE


def test_a_failed_run_retried_like_the_ui_does_generates_only_the_unfinished_samples(
        client, worker, demo_data, tmp_path):
    n = 24
    out = tmp_path / "traces"
    port = free_port()
    # a short outage allowance: a stopped teacher stops the run in seconds, not half an hour
    parameters = demo_parameters(demo_data, str(out), f"http://127.0.0.1:{port}/v1", n,
                                 max_retries=1, backoff_base_s=0.1, backoff_max_s=0.2, timeout_s=10, max_outage_s=3)
    with sim_at(port, "--latency", "0.4", "--latency-spread", "0.3") as url:
        run = run_from_ui(client, "geodistil-generate/generate", parameters)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(list(out.glob("trace_*.json"))) < n // 3:
            time.sleep(0.1)
    # the teacher is down from here on: past the outage allowance the run stops starting samples and fails
    failed = wait_final(client, run.id)
    assert failed.state.type == StateType.FAILED, failed.state
    assert "teacher unreachable" in failed.state.message
    store = TraceStore(str(out))
    first = {name: trace for name, trace in store.iter_traces()}
    finished = {name for name, trace in first.items() if trace.ok}
    assert n // 3 <= len(finished) < n
    assert store.read_json("summary.json")["success"] == len(finished)  # written before failing
    kept = {name: (out / name).read_bytes() for name in finished}

    with sim_at(port) as url:
        retry_from_ui(client, run.id)
        retried = wait_final(client, run.id)
        assert retried.state.type == StateType.COMPLETED, retried.state
        assert retried.id == run.id and retried.run_count > failed.run_count
        requests = sim_stats(url)["requests"]

    traces = dict(store.iter_traces())
    assert list(traces) == [f"trace_{i:05d}.json" for i in range(n)]
    assert all(t.ok for t in traces.values())
    assert all((out / name).read_bytes() == data for name, data in kept.items())  # finished: untouched
    regenerated = [t for name, t in traces.items() if name not in finished]
    assert requests == sum(t.usage.requests for t in regenerated) > 0  # and none for finished samples
    assert store.read_json("summary.json")["success"] == n
