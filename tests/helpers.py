"""Shared helpers for tests that need real servers: free ports and the simulated teacher CLI."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@contextlib.contextmanager
def sim_process(*args: str, port: int | None = None) -> Iterator[str]:
    """``geodistil sim`` as a real process on a loopback port (default: a free one); yields its /v1 URL."""
    port = port or free_port()
    proc = subprocess.Popen([sys.executable, "-m", "geodistil.cli", "sim", "--host", "127.0.0.1",
                             "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def sim_stats(base_url: str) -> dict:
    return httpx.get(base_url.removesuffix("/v1") + "/sim/stats", timeout=5).json()
