"""The zygote: a warm, clean process that forks one locked-down child per job.

Layer "clean process": the pool starts this module with ``subprocess`` (never a fork of the
geodistil process, which holds the API key and open connections), with an environment built
from nothing (see ``pool.ZYGOTE_ENV``), in its own session so terminal signals miss it.

It preloads numpy and PIL (``preload.py``) and compiles the seccomp filter once. Then, per
job: it builds the input image from the shared input window (the child inherits it
copy-on-write), forks, and enforces the layer "wall-clock deadline": at ``timeout_s`` the
child is killed. It reads the child's Result from a pipe, the pixels straight into the
parent's output window, replies, and only then kills and reaps the child. Jobs come one at a
time; the pool runs several zygotes for parallelism.
"""

from __future__ import annotations

import fcntl
import gc
import mmap
import os
import select
import signal
import sys
import time

from PIL import Image

from geodistil.sandbox import seccomp
from geodistil.sandbox.child import child_main
from geodistil.sandbox.preload import preload
from geodistil.sandbox.protocol import (
    MAX_RESULT_BYTES, READY, RESULT_HEADER_BYTES, VERDICT_EXITED, VERDICT_OVERSIZE, VERDICT_RESULT,
    VERDICT_SIGNALED, VERDICT_TIMEOUT, WINDOW_BYTES, Job, read_job, reply_header, result_lengths, write_all,
)


_parent_fd = -1  # the job pipe, watched during every job (set in main)


class _Windows:
    """The memory shared with the parent: its input window and its output window."""

    def __init__(self, shm_fd: int) -> None:
        self._map = mmap.mmap(shm_fd, 2 * WINDOW_BYTES)
        self._map.madvise(mmap.MADV_DONTFORK)  # children never see the parent's windows
        os.close(shm_fd)
        self.job_in = memoryview(self._map)[:WINDOW_BYTES]
        self.reply_out = memoryview(self._map)[WINDOW_BYTES:]


class _ParentGone(Exception):
    """The job pipe ended mid-job: geodistil exited or was killed, nobody wants the answer."""


def _wait_for(fd: int, deadline: float) -> bool:
    """Whether ``fd`` became readable before the deadline; raises _ParentGone if the parent left.

    The parent never writes while a job runs, so its pipe turning readable means end of stream.
    """
    while (remaining := deadline - time.monotonic()) > 0:
        ready = select.select([fd, _parent_fd], [], [], remaining)[0]
        if _parent_fd in ready:
            raise _ParentGone
        if ready:
            return True
    return False


def _wait_exit(pid: int, pidfd: int, deadline: float) -> tuple[int, int]:
    """The verdict on a child that closed its pipe without a complete Result."""
    if not _wait_for(pidfd, deadline):
        return VERDICT_TIMEOUT, 0
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return VERDICT_SIGNALED, os.WTERMSIG(status)
    return VERDICT_EXITED, os.WEXITSTATUS(status)


def _read_into(fd: int, view: memoryview, deadline: float) -> int | None:
    """Bytes read into ``view`` (0 at end of stream), or None once the deadline has passed."""
    return os.readv(fd, [view]) if _wait_for(fd, deadline) else None


def _read_full(pid: int, pidfd: int, fd: int, view: memoryview, deadline: float) -> tuple[int, int] | None:
    """Fill ``view`` from the child; None when full, else the verdict (timeout, or how it ended)."""
    got = 0
    while got < len(view):
        count = _read_into(fd, view[got:], deadline)
        if count is None:
            return VERDICT_TIMEOUT, 0
        if count == 0:
            return _wait_exit(pid, pidfd, deadline)
        got += count
    return None


def _collect(pid: int, pidfd: int, result_fd: int, deadline: float,
             pixel_window: memoryview) -> tuple[int, int, bytes]:
    """Read the child's Result, its pixels into ``pixel_window``, within the deadline.

    Returns (verdict, code, Result bytes without pixels). The reply goes out as soon as the
    Result is complete, not after the child's exit: tearing down a forked address space takes
    milliseconds nobody needs to wait for.
    """
    head = bytearray(RESULT_HEADER_BYTES)
    ended = _read_full(pid, pidfd, result_fd, memoryview(head), deadline)
    if ended:
        return *ended, b""
    text_end, pixels = result_lengths(head)
    if text_end > MAX_RESULT_BYTES or pixels > len(pixel_window):
        return VERDICT_OVERSIZE, 0, b""
    result = head + bytes(text_end - len(head))
    ended = (_read_full(pid, pidfd, result_fd, memoryview(result)[len(head):], deadline)
             or _read_full(pid, pidfd, result_fd, pixel_window[:pixels], deadline))
    if ended:
        return *ended, b""
    return VERDICT_RESULT, 0, bytes(result)


def _reap(pid: int, pidfd: int) -> None:
    """Kill (by pidfd: never a recycled pid) and reap a child that is done, late or misbehaving."""
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # already reaped by _wait_exit
        pass
    os.close(pidfd)


def _supervise(job: Job, windows: _Windows, reply_out: int, seccomp_program: bytes) -> None:
    read_fd, write_fd = os.pipe()
    try:  # a 1 MiB pipe moves a 1024x768 result in a few reads instead of forty
        fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass
    start = time.monotonic()
    # built before the fork: the child inherits it without a copy
    image = Image.frombytes(job.mode, (job.width, job.height), windows.job_in[:job.pixel_len])
    zygote_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        child_main(job, image, result_fd=write_fd, zygote_pid=zygote_pid, seccomp_program=seccomp_program)
    del image
    os.close(write_fd)
    pidfd = os.pidfd_open(pid)
    try:
        verdict, code, payload = _collect(pid, pidfd, read_fd, start + job.timeout_s, windows.reply_out)
        elapsed = time.monotonic() - start
        write_all(reply_out, reply_header(job.job_id, verdict, code, elapsed, len(payload)) + payload)
    finally:
        _reap(pid, pidfd)
        os.close(read_fd)


def _claim_protocol_fds() -> tuple[int, int]:
    """Move the protocol pipes off fds 0 and 1, so a stray print cannot corrupt a frame."""
    job_in, reply_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    return job_in, reply_out


def main(shm_fd: int) -> None:
    global _parent_fd
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the pool decides when zygotes end
    job_in, reply_out = _claim_protocol_fds()
    _parent_fd = job_in
    windows = _Windows(shm_fd)
    preload()
    try:
        program = seccomp.compile_program()
    except OSError as exc:  # each child then reports the layer as missing
        program = b""
        sys.stderr.write(f"geodistil sandbox: could not compile the seccomp filter: {exc}\n")
    gc.collect()
    gc.freeze()  # a GC pass in a child would touch, and so copy, every page of the heap
    write_all(reply_out, READY)
    try:
        while (job := read_job(job_in)) is not None:
            _supervise(job, windows, reply_out, program)
    except _ParentGone:  # _supervise has killed the child on its way out
        return
