"""Prefect's task results beside the traces are JSON records that run no code when read back."""

from __future__ import annotations

import base64
import os
import pickle

import pytest
from prefect._internal.result_records import ResultRecord, ResultRecordMetadata
from prefect.results import ResultStore
from prefect.serializers import JSONSerializer, PickleSerializer

from geodistil.store import StorageSpec
from geodistil.trace import TraceRecord
from tasks.results import TraceRecordSerializer, UntrustedResultError, results_block


class MakesADirectory:
    """Unpickling this creates ``path``: proof that a result file ran code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def pickle_record(marker: str) -> bytes:
    """A result file as Prefect writes it with its default (pickle) serializer."""
    metadata = ResultRecordMetadata(serializer=PickleSerializer(), storage_key="key")
    return ResultRecord(metadata=metadata, result=MakesADirectory(marker)).serialize()


def json_record_decoding_with_pickle(marker: str) -> bytes:
    """A record that claims JSON but names ``pickle`` as its JSON library."""
    payload = base64.b64encode(pickle.dumps(MakesADirectory(marker))).decode()
    serializer = JSONSerializer(jsonlib="pickle", object_decoder=None)
    return ResultRecord(metadata=ResultRecordMetadata(serializer=serializer, storage_key="key"),
                        result=payload).model_dump_json(serialize_as_any=True).encode()


@pytest.fixture()
def result_store(tmp_path) -> ResultStore:
    return ResultStore(result_storage=results_block(StorageSpec(url=str(tmp_path / "traces"))),
                       serializer=TraceRecordSerializer(), cache_result_in_memory=False)


def write_result(tmp_path, content: bytes) -> None:
    folder = tmp_path / "traces" / ".prefect-results"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "key").write_bytes(content)


@pytest.mark.parametrize("craft", [pickle_record, json_record_decoding_with_pickle])
def test_a_crafted_result_in_the_store_is_a_cache_miss_that_runs_nothing(tmp_path, result_store, craft):
    marker = str(tmp_path / "ran")
    write_result(tmp_path, craft(marker))
    assert not result_store.exists("key")
    with pytest.raises(UntrustedResultError):
        result_store.read("key")
    assert not os.path.exists(marker)


def test_a_trace_record_result_reads_back_as_the_record(result_store):
    record = TraceRecord(name="trace_00003.json", sample_index=3, rollout_index=0, ok=True, distance_km=12.5)
    result_store.persist_result_record(result_store.create_result_record(record, key="key"))
    assert result_store.exists("key")
    assert result_store.read("key").result == record


def test_a_failed_tasks_exception_is_kept_as_its_message(result_store):
    result_store.persist_result_record(result_store.create_result_record(ValueError("teacher down"), key="key"))
    error = result_store.read("key").result
    assert isinstance(error, RuntimeError) and str(error) == "ValueError: teacher down"


@pytest.mark.slow
def test_a_run_of_several_chunks_saves_its_result_storage_block_once(tmp_path, monkeypatch):
    import flows.generation
    from geodistil.config import TeacherConfig
    from geodistil.data import DatasetSpec
    from geodistil.store import SampleRange
    from geodistil.sim import SimConfig, SimServer, make_demo_dataset
    from tasks.results import result_storage_for

    saved: list[str] = []

    async def counted(storage: StorageSpec):
        saved.append(storage.url)
        return await result_storage_for(storage)

    monkeypatch.setattr(flows.generation, "result_storage_for", counted)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    dataset = make_demo_dataset(str(tmp_path / "demo"), n=3, seed=1)
    out = str(tmp_path / "traces")
    with SimServer(SimConfig(port=0, seed=1, tool_calls=0)) as sim:
        summary, failed = flows.generation.run_generation(
            dataset=DatasetSpec(path=dataset), storage=StorageSpec(url=out), samples=SampleRange(num_samples=3),
            teacher=TeacherConfig(base_url=sim.base_url, model="geodistil-sim", timeout_s=30), chunk_size=1)
    assert failed is None and summary["total"] == 3
    assert saved == [out]  # three chunks, one save
    assert sorted(os.listdir(os.path.join(out, ".prefect-results")))  # and the chunks' tasks used it


def test_results_resolve_as_prefect_resolves_them_and_stay_inside_the_folder(tmp_path):
    """The block's cheaper path resolution keeps Prefect's rule: inside the folder, links followed."""
    from prefect.filesystems import LocalFileSystem

    block = results_block(StorageSpec(url=str(tmp_path / "traces")))
    prefects = LocalFileSystem(basepath=block.basepath)
    folder = tmp_path / "traces" / ".prefect-results"
    folder.mkdir(parents=True)
    for name in ("key", "a1b2c3", "sub/key"):
        assert block._resolve_path(name) == prefects._resolve_path(name)
    block.write_path("key", b"x")
    assert (folder / "key").read_bytes() == b"x"

    outside = tmp_path / "elsewhere"
    outside.write_bytes(b"mine")
    (folder / "planted").symlink_to(outside)  # whoever can write the store plants a link
    for path in ("planted", "../elsewhere", str(outside)):
        with pytest.raises(ValueError, match="outside of the base path"):
            block.write_path(path, b"overwritten")
    assert outside.read_bytes() == b"mine"
