"""Shared helpers for tests that need real servers: free ports and the simulated teacher CLI.

The port and process helpers are the library's (``geodistil.sim.net``), which the benchmarks use too.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx

from geodistil.sim.net import free_port, stop_process, wait_http

__all__ = ["free_port", "sim_process", "sim_stats", "wait_http"]


@contextlib.contextmanager
def sim_process(*args: str, port: int | None = None) -> Iterator[str]:
    """``geodistil sim`` as a real process on a loopback port (default: a free one); yields its /v1 URL."""
    port = port or free_port()
    proc = subprocess.Popen([sys.executable, "-m", "geodistil.cli", "sim", "--host", "127.0.0.1",
                             "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", process=proc)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_process(proc)


def sim_stats(base_url: str) -> dict:
    return httpx.get(base_url.removesuffix("/v1") + "/sim/stats", timeout=5).json()


@contextlib.contextmanager
def loopback_s3(monkeypatch) -> Iterator[dict]:
    """A loopback S3 server (moto) with the bucket ``traces-bucket``; test credentials in the
    environment, as every worker machine has them. Yields the s3fs client options."""
    import s3fs
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    options = {"endpoint_url": f"http://127.0.0.1:{port}"}
    s3fs.S3FileSystem(**options).makedirs("traces-bucket", exist_ok=True)  # moto state outlives a server
    try:
        yield options
    finally:
        server.stop()
