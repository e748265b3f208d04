"""prefect.yaml and the per-process teacher clients, without a server (the slow tests deploy for real)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from geodistil.config import RolloutSettings, TeacherConfig
from tasks.contexts import close_shared_contexts, shared_context, teacher_api_key

REPO = Path(__file__).resolve().parents[1]
PROJECT = yaml.safe_load((REPO / "prefect.yaml").read_text())
DEPLOYMENTS = PROJECT["deployments"]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_every_deployment_loads_its_flow_and_its_default_parameters_validate(deployment):
    flow = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
    flow.validate_parameters(deployment.get("parameters") or {})
    assert deployment["work_pool"]["name"] == "geodistil"


def test_deployment_names_are_unique_so_deploy_name_picks_one():
    names = [d["name"] for d in DEPLOYMENTS]
    assert len(set(names)) == len(names)


def test_flow_runs_start_in_the_checkout_recorded_at_deploy_time():
    (build,) = PROJECT["build"]
    assert build["prefect.deployments.steps.run_shell_script"] == {"id": "checkout", "script": "pwd",
                                                                   "stream_output": False}
    (pull,) = PROJECT["pull"]
    assert pull == {"prefect.deployments.steps.set_working_directory": {"directory": "{{ checkout.stdout }}"}}


def test_the_demo_defaults_point_at_the_demo_data_and_the_simulated_teacher():
    (generate,) = [d for d in DEPLOYMENTS if d["entrypoint"].endswith(":generate_flow")]
    assert generate["parameters"]["dataset"] == {"path": "out/demo-data"}
    assert generate["parameters"]["teacher"]["base_url"] == "http://127.0.0.1:8000/v1"


def test_no_deployment_parameter_holds_a_key():
    text = (REPO / "prefect.yaml").read_text()
    assert "api_key:" not in text and "sk-" not in text
    assert "api_key" not in TeacherConfig.model_fields  # only the env var's name or the Secret block's name


def test_the_generation_flow_offers_the_workers_runner_as_a_parameter():
    from flows.generation import generate_chunk, generate_flow

    properties = generate_flow.parameters.properties
    assert properties["runner"]["enum"] == ["local", "workers"]
    assert properties["runner"]["default"] == "local"
    assert "dask_address" not in properties and "runner" not in generate_chunk.parameters.properties
    assert properties["chunk_deployment"]["default"] == "geodistil-generate-chunk/generate-chunk"
    assert {d["entrypoint"] for d in DEPLOYMENTS} >= {"flows/generation.py:generate_chunk"}  # what it names


def test_without_a_secret_name_the_key_comes_from_the_environment():
    assert asyncio.run(teacher_api_key(TeacherConfig())) is None


def test_tasks_on_one_loop_share_one_teacher_client_until_it_is_closed():
    settings = RolloutSettings(teacher=TeacherConfig(base_url="http://127.0.0.1:9/v1"))

    async def twice() -> tuple[object, object, object]:
        a, b = await shared_context(settings), await shared_context(settings)
        await close_shared_contexts()
        c = await shared_context(settings)
        await close_shared_contexts()
        return a, b, c

    first, again, after_close = asyncio.run(twice())
    assert first is again and after_close is not first


def test_the_server_settings_are_prefect_settings_and_the_environment_keeps_its_own(monkeypatch):
    import os

    from prefect.settings import Settings

    from flows.generation import SERVER_SETTINGS, use_server_settings

    first, *rest = SERVER_SETTINGS
    monkeypatch.setattr(os, "environ", {first: "7"})
    use_server_settings()
    assert os.environ == {**SERVER_SETTINGS, first: "7"}  # the environment's own value wins

    for name, value in SERVER_SETTINGS.items():  # a misspelt name would be silently ignored by Prefect
        monkeypatch.setenv(name, value)
    services = Settings().server.services
    assert services.task_run_recorder.batch_size == int(SERVER_SETTINGS[
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"]) > 1
    assert services.event_persister.batch_size == int(SERVER_SETTINGS[
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE"]) > 1
    assert services.task_run_recorder.flush_interval == services.event_persister.flush_interval == 1
