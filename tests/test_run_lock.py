"""One run at a time on a trace store, local or S3: the run lock."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from geodistil.store import LOCK, LockHolder, RunLock, StoreLockedError, TraceStore, lock_holder
from tests.helpers import free_port


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, monkeypatch) -> TraceStore:
    if request.param == "local":
        return TraceStore(str(tmp_path / "traces"))
    import s3fs

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"lock-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem(endpoint_url=endpoint).mkdir(bucket)
    return TraceStore(f"s3://{bucket}/run", {"endpoint_url": endpoint})


def a_pid_that_is_gone() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_run_on_a_locked_store_fails_naming_the_first(store):
    with RunLock(store, owner="flow run 'first'"):
        with pytest.raises(StoreLockedError, match="in use by flow run 'first' on .*pid"):
            RunLock(store, owner="flow run 'second'").acquire()
        assert lock_holder(store).owner == "flow run 'first'"


def test_a_released_lock_lets_the_next_run_in(store):
    with RunLock(store, owner="first"):
        pass
    assert not store.exists(LOCK)
    with RunLock(store, owner="second"):
        assert lock_holder(store).owner == "second"


def test_a_lock_whose_process_is_gone_is_taken_over_naming_it(store):
    dead = LockHolder(owner="crashed run", pid=a_pid_that_is_gone())
    store.write_bytes(LOCK, dead.model_dump_json().encode())
    with RunLock(store, owner="next run") as lock:
        assert lock.replaced == dead
        assert lock_holder(store).owner == "next run"


def test_a_lock_without_a_recent_heartbeat_is_taken_over(store):
    old = LockHolder(owner="run elsewhere", host="another-host")
    old = old.model_copy(update={"heartbeat": old.heartbeat - timedelta(hours=1)})
    store.write_bytes(LOCK, old.model_dump_json().encode())
    with RunLock(store, owner="next run") as lock:
        assert lock.replaced == old


def test_a_live_lock_on_another_host_is_respected(store):
    store.write_bytes(LOCK, LockHolder(owner="run elsewhere", host="another-host").model_dump_json().encode())
    with pytest.raises(StoreLockedError, match="run elsewhere on another-host"):
        RunLock(store, owner="next run").acquire()


def test_the_heartbeat_keeps_the_lock_fresh(store):
    lock = RunLock(store, owner="beating", heartbeat_s=0.05).acquire()
    try:
        first = lock_holder(store).heartbeat
        for _ in range(1000):  # a generous wait for the thread's next beat, not a timing check
            if lock_holder(store).heartbeat != first:
                break
            time.sleep(0.01)
        assert lock_holder(store).heartbeat > first
    finally:
        lock.release()


def test_the_temporaries_a_killed_writer_left_are_removed(tmp_path):
    store = TraceStore(str(tmp_path / "traces"))
    store.write_bytes("trace_00000.json", b"{}")
    (tmp_path / "traces" / "trace_00001.json.tmp-1a2b3c4d").write_bytes(b"{half")
    assert store.remove_temporaries() == ["trace_00001.json.tmp-1a2b3c4d"]
    assert sorted(p.name for p in (tmp_path / "traces").iterdir()) == ["trace_00000.json"]
