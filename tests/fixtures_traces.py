"""Session fixtures over generated trace sets and a loopback S3 server.

A test module uses them with ``pytest_plugins = ["tests.fixtures_traces"]``, so every module of
a session shares one of each (importing the fixtures would make one per module). The sets are
shared: a test that changes a store works on ``copy_store(...)`` of it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from tests.helpers import free_port
from tests.trace_sets import S3, TraceSet, make_trace_set


@pytest.fixture(scope="session")
def small_set(tmp_path_factory) -> TraceSet:
    """12 samples x 4 rollouts, with parse failures, failed tool calls and teacher errors."""
    return make_trace_set(tmp_path_factory.mktemp("small-set"), samples=12, rollouts=4, seed=11)


@pytest.fixture(scope="session")
def single_rollout_set(tmp_path_factory) -> TraceSet:
    return make_trace_set(tmp_path_factory.mktemp("single-set"), samples=10, rollouts=1, seed=12, faults=False)


@pytest.fixture(scope="session")
def big_set(tmp_path_factory) -> TraceSet:
    """The acceptance set: 100 samples x 4 rollouts (for ``@pytest.mark.slow`` tests)."""
    return make_trace_set(tmp_path_factory.mktemp("big-set"), samples=100, rollouts=4, seed=13)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    """A real S3 API on loopback (moto's server), with a fresh bucket; test credentials only."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request otherwise
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        import s3fs

        endpoint = f"http://127.0.0.1:{port}"
        s3fs.S3FileSystem(endpoint_url=endpoint).mkdir("curation")
        yield S3(endpoint, "curation")
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
