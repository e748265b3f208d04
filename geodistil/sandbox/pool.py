"""Parent side: zygote processes, and one job's round trip through an idle one.

A ``Zygote`` is a ``subprocess`` running ``worker.main``. A ``ZygotePool`` keeps ``size`` of
them in a queue; a caller takes one, sends a job, reads the reply and puts it back, so the
pool is safe to use from many threads (``asyncio.to_thread`` included). A zygote that breaks
the protocol, dies, or does not answer in time is killed and replaced; the caller gets a
``SandboxError``, the other zygotes keep working.
"""

from __future__ import annotations

import itertools
import json
import mmap
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from PIL import Image

import geodistil
from geodistil.errors import SandboxError
from geodistil.sandbox.protocol import (
    READY, WINDOW_BYTES, Job, ProtocolError, Reply, read_exact, read_reply, write_all,
)
from geodistil.sandbox.wire import copy_pixels

T = TypeVar("T")

# Layer "clean process": the zygote's whole environment. Nothing is inherited (no API key, no
# proxy settings, no PATH); one BLAS/OpenMP thread, so the child never needs to start threads;
# a fixed hash seed, so the iteration order of sets of strings is the same on every replay.
ZYGOTE_ENV = {
    "PYTHONHASHSEED": "0",
    "PYTHONUTF8": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "LC_ALL": "C.UTF-8",
}
# -S: no site hooks or .pth files run in the zygote; the import path is handed over explicitly
_BOOTSTRAP = ("import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
              "from geodistil.sandbox.worker import main; main(int(sys.argv[2]))")
STARTUP_TIMEOUT_S = 60.0  # a cold first import of numpy and PIL on a slow disk
REPLY_GRACE_S = 5.0  # beyond the job's own timeout: fork, lockdown and moving the pixels


def _import_path() -> list[str]:
    package_root = str(Path(geodistil.__file__).resolve().parent.parent)
    return [package_root] + [p for p in sys.path if p and os.path.isdir(p)]  # never '' (the cwd)


class Zygote:
    """One zygote process, its pipes, and the memory it shares with it for pixels."""

    def __init__(self) -> None:
        # sparse: only the pages the largest image so far has touched take memory
        shm_fd = os.memfd_create("geodistil-sandbox")
        try:
            os.ftruncate(shm_fd, 2 * WINDOW_BYTES)
            self._shared = mmap.mmap(shm_fd, 2 * WINDOW_BYTES)
            self._proc = subprocess.Popen(
                [sys.executable, "-S", "-s", "-B", "-c", _BOOTSTRAP, json.dumps(_import_path()), str(shm_fd)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ZYGOTE_ENV, cwd="/",
                close_fds=True, pass_fds=(shm_fd,), start_new_session=True, bufsize=0,
            )
        finally:
            os.close(shm_fd)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._job_fd, self._reply_fd = self._proc.stdin.fileno(), self._proc.stdout.fileno()
        self._job_in = memoryview(self._shared)[:WINDOW_BYTES]
        self._reply_in = memoryview(self._shared)[WINDOW_BYTES:]
        self._ready = False

    @property
    def pid(self) -> int:
        return self._proc.pid

    def exited(self) -> bool:
        return self._proc.poll() is not None

    def _wait_ready(self) -> None:
        greeting = read_exact(self._reply_fd, len(READY), deadline=time.monotonic() + STARTUP_TIMEOUT_S)
        if greeting != READY:
            raise ProtocolError("the zygote did not start")
        self._ready = True

    def round_trip(self, job: Job, image: Image.Image) -> tuple[Reply, memoryview]:
        """Send one job; the reply and the output window (valid until this zygote's next job)."""
        if not self._ready:
            self._wait_ready()
        copy_pixels(image, self._job_in)
        write_all(self._job_fd, job.header() + job.code)
        reply = read_reply(self._reply_fd, deadline=time.monotonic() + job.timeout_s + REPLY_GRACE_S)
        if reply.job_id != job.job_id:
            raise ProtocolError("reply for another job")
        return reply, self._reply_in

    def close(self) -> None:
        """End of stream tells the zygote to exit; kill it if it does not."""
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait(timeout=1.0)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def kill(self) -> None:
        self._proc.kill()  # no-op once exited; its children die by their parent-death signal
        self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        self._job_in.release()
        self._reply_in.release()
        try:
            self._shared.close()
        except BufferError:  # a caller still holds a view; the mapping goes when that does
            pass


class ZygotePool:
    def __init__(self, size: int = 2) -> None:
        if size < 1:
            raise ValueError(f"the sandbox pool needs at least one worker, got {size}")
        self.size = size
        self._idle: queue.Queue[Zygote] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._job_ids = itertools.count(1)
        for _ in range(size):  # all start importing at once; the first job waits for one
            self._idle.put(Zygote())

    def next_job_id(self) -> int:
        return next(self._job_ids) & 0xFFFFFFFF

    def submit(self, job: Job, image: Image.Image, read: Callable[[Reply, memoryview], T]) -> T:
        """Run one job on an idle zygote and ``read`` its reply while the output window is still ours.

        ``image`` must already be in a wire mode, of the job's layout.
        """
        if self._closed:
            raise SandboxError("the sandbox pool is closed")
        zygote = self._idle.get()
        if zygote.exited():  # died between jobs (OOM killer, an operator): replace it quietly
            zygote.kill()
            zygote = Zygote()
        try:
            reply, window = zygote.round_trip(job, image)
            return read(reply, window)
        except (OSError, ProtocolError, TimeoutError) as exc:
            zygote.kill()
            zygote = Zygote()
            raise SandboxError(f"a sandbox worker failed and was replaced: {type(exc).__name__}: {exc}") from exc
        finally:
            self._release(zygote)

    def _release(self, zygote: Zygote) -> None:
        with self._lock:
            if not self._closed:
                self._idle.put(zygote)
                return
        zygote.close()

    def zygote_pids(self) -> list[int]:
        """The idle zygotes' pids (for tests that check the pool survives an attack)."""
        with self._idle.mutex:
            return [z.pid for z in self._idle.queue]

    def close(self) -> None:
        with self._lock:
            self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
