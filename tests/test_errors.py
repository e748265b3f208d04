"""One exception tree: each class carries its family, whether it is retried, re-run or stops the
run; a trace's ``error_kind`` is derived from the class and maps back to it, and every decision
(Prefect's retries, the flow's stand-in records, the early stop) reads the class."""

from __future__ import annotations

import inspect

import pytest
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore
from prefect.states import Failed

from geodistil import errors
from geodistil.config import RolloutSettings
from geodistil.data import DatasetSpec
from geodistil.errors import (
    ConfigError,
    GeodistilError,
    RerunSampleError,
    RetryableSampleError,
    SandboxUnavailable,
    StoreError,
    TeacherError,
    TeacherUnreachable,
    error_class,
)
from geodistil.generate import FailFast, stops_run
from geodistil.store import StorageSpec
from tasks.generation import SampleJob, _retry_transient_only


@pytest.mark.parametrize("error, kind", [
    (GeodistilError(), "internal_error"),
    (TeacherError("x", kind="http_503"), "teacher_error:http_503"),
    (TeacherUnreachable("x", kind="connection"), "teacher_unreachable:connection"),
    (SandboxUnavailable("x"), "sandbox_unavailable"),
    (StoreError("x"), "store_error"),
    (ConfigError("x"), "config_error"),
])
def test_each_error_kind_maps_back_to_its_class(error, kind):
    assert error.error_kind == kind and error_class(kind) is type(error)


def test_an_unknown_or_absent_error_kind_maps_to_no_class():
    assert error_class("from_a_later_version:x") is None and error_class(None) is None


def test_prefect_retries_only_what_the_error_class_calls_retryable():
    def retried(error: BaseException) -> bool:
        return _retry_transient_only(None, None, Failed(data=error))

    assert retried(RetryableSampleError("x")) and retried(RuntimeError("a bug"))
    assert not retried(RerunSampleError("x")) and not retried(StoreError("disk full"))


def test_every_class_in_the_tree_has_a_family_that_maps_back_to_it_or_to_its_parent():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, GeodistilError)]
    assert len(classes) >= 20
    for cls in classes:
        mapped = error_class(cls.family)
        assert mapped is not None and issubclass(cls, mapped), cls


def test_the_error_classes_that_lived_elsewhere_are_the_ones_in_the_tree():
    from geodistil.export import Skip
    from geodistil.sandbox.protocol import ProtocolError
    from geodistil.store import StoreLockedError
    from geodistil.viewer.query import QueryError
    from tasks.results import UntrustedResultError

    for cls in (Skip, ProtocolError, StoreLockedError, QueryError, UntrustedResultError):
        assert cls.__module__ == "geodistil.errors" and issubclass(cls, GeodistilError)
    assert issubclass(QueryError, ValueError) and issubclass(ProtocolError, ValueError)  # callers catch ValueError


def test_two_classes_cannot_claim_one_family():
    with pytest.raises(TypeError, match="taken by StoreError"):
        type("Another", (GeodistilError,), {"family": "store_error"})


@pytest.mark.parametrize("in_memory", [False, True])
def test_a_task_that_could_not_write_its_trace_stands_in_as_a_store_error_that_stops_the_run(tmp_path, in_memory):
    from flows.generation import _record_of_failure

    error = StoreError("sample 3: cannot write its trace to out: No space left on device")
    store = ResultStore(result_storage=LocalFileSystem(basepath=str(tmp_path / "results")))
    data = store.create_result_record(error, key="k") if in_memory else error  # as the engine leaves it
    job = SampleJob(dataset=DatasetSpec(path="unused"), storage=StorageSpec(url=str(tmp_path)),
                    settings=RolloutSettings(), sample_index=3)
    record = _record_of_failure(StorageSpec(url=str(tmp_path)).store(), job, Failed(data=data, message="m"))
    assert (record.error_kind, record.error) == ("store_error", str(error)) and stops_run(record)
    fail_fast = FailFast()
    fail_fast.add(record)
    assert fail_fast.reason == str(error)


def test_a_task_that_failed_otherwise_stands_in_as_task_failed(tmp_path):
    from flows.generation import _record_of_failure

    job = SampleJob(dataset=DatasetSpec(path="unused"), storage=StorageSpec(url=str(tmp_path)),
                    settings=RolloutSettings(), sample_index=3)
    record = _record_of_failure(StorageSpec(url=str(tmp_path)).store(), job,
                                Failed(data=RuntimeError("worker died"), message="Task run failed: worker died"))
    assert record.error_kind == "internal_error:task_failed" and not stops_run(record)
    assert error_class(record.error_kind) is GeodistilError  # an internal error: retried, re-run


def test_a_chunk_that_failed_every_attempt_leaves_unfinished_samples_a_retry_redoes():
    from flows.chunks import _stand_ins
    from geodistil.generate import is_unfinished

    settings = RolloutSettings.model_validate({"generation": {"rollouts_per_sample": 2}})
    records = _stand_ins(4, 5, settings, "worker lost")
    assert [(r.sample_index, r.rollout_index) for r in records] == [(4, 0), (4, 1), (5, 0), (5, 1)]
    assert {r.error_kind for r in records} == {"internal_error:chunk_failed"}
    assert all(is_unfinished(r) and not stops_run(r) for r in records)


def test_a_run_whose_store_fills_up_stops_starting_samples_with_one_line(tmp_path, monkeypatch):
    import asyncio
    import errno

    from geodistil.config import GenerationConfig, TeacherConfig
    from geodistil.generate import generate
    from geodistil.sim import SimConfig, SimServer, make_demo_dataset
    from geodistil.store import TraceStore

    def full(self, name: str, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    demo = make_demo_dataset(str(tmp_path / "data"), 8, seed=1)
    monkeypatch.setattr(TraceStore, "write_bytes", full)
    with SimServer(SimConfig(port=0, seed=1, tool_calls=0)) as server:
        settings = RolloutSettings(teacher=TeacherConfig(base_url=server.base_url, max_retries=0),
                                   generation=GenerationConfig(max_concurrency=2))
        with pytest.raises(StoreError) as raised:
            asyncio.run(generate(DatasetSpec(path=demo), StorageSpec(url=str(tmp_path / "out")), settings))
        answers = server.stats()["answers"]
    assert str(raised.value) in (f"cannot write the trace of sample {i} to {tmp_path / 'out'}: No space left on device"
                                 for i in range(8))
    assert "\n" not in str(raised.value)
    assert 1 <= answers <= 2  # the samples in flight when the store failed; none started after


def test_a_store_that_cannot_take_the_summary_says_so_in_one_line(tmp_path, monkeypatch):
    import asyncio
    import errno

    from geodistil.generate import write_outputs_or_stop
    from geodistil.store import TraceStore

    def read_only(self, name: str, data: bytes) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(TraceStore, "write_bytes", read_only)
    store = TraceStore(str(tmp_path))
    with pytest.raises(StoreError, match=r"^cannot write the manifest and summary to .*: Read-only file system$"):
        asyncio.run(write_outputs_or_stop(store, [], {}))
