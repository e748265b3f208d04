"""``replay`` and ``export`` on a store with a bad trace: the trace is named in one line,
counted, and every other trace is still replayed or exported; no traceback."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from geodistil.cli import app
from geodistil.store import TraceStore
from tests.trace_sets import copy_store

# the trace-set fixtures, shared by every module in the session (an import would make one per module)
pytest_plugins = ["tests.fixtures_traces"]

BAD = "trace_00005.json"


@pytest.fixture()
def store(single_rollout_set, tmp_path) -> TraceStore:
    """A copy of 10 good traces, one per sample, the manifest listing them all."""
    return copy_store(single_rollout_set, tmp_path / "traces")


def move_dataset_of(store: TraceStore, name: str, to: str) -> None:
    data = json.loads(store.read_bytes(name))
    data["dataset_path"] = to
    store.write_bytes(name, json.dumps(data).encode())


def replace_with_folder(store: TraceStore, name: str) -> None:
    store.fs.rm(store.path(name))
    store.fs.mkdir(store.path(name))


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert type(result.exception) in (SystemExit, type(None)), result.output  # ended, not crashed
    assert "Traceback" not in result.output
    return result


def lines_naming(result, name: str) -> list[str]:
    return [line for line in result.stdout.splitlines() if name in line]


def test_replay_names_a_trace_whose_dataset_moved_and_verifies_the_rest(store, tmp_path):
    move_dataset_of(store, BAD, str(tmp_path / "moved"))
    result = cli("replay", store.url)
    assert result.exit_code == 1
    assert lines_naming(result, BAD) == [f"failed {BAD}: sample 5: dataset {tmp_path / 'moved'} does not exist: "
                                         "give a datasets save_to_disk folder (local or s3://...) or a Hugging Face "
                                         "hub id"]
    assert "verified 9 traces and" in result.stdout and "1 failed, 0 unreadable)" in result.stdout


def test_replay_names_a_folder_in_place_of_a_trace_and_verifies_the_rest(store):
    replace_with_folder(store, BAD)
    result = cli("replay", store.url)
    assert result.exit_code == 1
    [line] = lines_naming(result, BAD)
    assert line.startswith(f"failed {BAD}: unreadable:")
    assert "verified 9 traces and" in result.stdout and "0 failed, 1 unreadable)" in result.stdout


def test_export_skips_a_trace_whose_dataset_moved_by_name_and_exports_the_rest(store, tmp_path):
    move_dataset_of(store, BAD, str(tmp_path / "moved"))
    result = cli("export", store.url, str(tmp_path / "export"), "--format", "sharegpt")
    assert result.exit_code == 0
    assert lines_naming(result, BAD) == [f"skipped {BAD}: replay failed: dataset {tmp_path / 'moved'} "
                                         "does not exist: give a datasets save_to_disk folder (local or s3://...) "
                                         "or a Hugging Face hub id"]
    assert f"exported 9 rows (1 traces skipped) to {tmp_path / 'export'}: verified" in result.stdout


def test_export_with_a_dataset_that_does_not_exist_stops_in_one_line(store, tmp_path):
    result = cli("export", store.url, str(tmp_path / "export"), "--dataset", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert result.stderr == (f"error: dataset {tmp_path / 'nope'} does not exist: give a datasets save_to_disk "
                             "folder (local or s3://...) or a Hugging Face hub id\n")
