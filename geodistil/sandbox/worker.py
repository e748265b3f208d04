"""The zygote: a warm, clean process that forks one locked-down child per job.

Layer "clean process": the pool starts this module with ``subprocess`` (never a fork of the
geodistil process, which holds the API key and open connections), with an environment built
from nothing (see ``pool.ZYGOTE_ENV``), in its own session so terminal signals miss it.

It imports numpy, PIL and their lazily loaded parts once, before any job: after lockdown a
child cannot open a file, so a first-time import there would fail. Then, per job, it reads
the job and builds the input image (the child inherits it copy-on-write: no copy, no page faults),
forks, lets the child lock itself down and run the code, and enforces the layer
"wall-clock deadline": at ``timeout_s`` the child is killed. The zygote then reaps it and
replies with its verdict and the child's bytes. Jobs come one at a time; the pool runs
several zygotes for parallelism.
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import select
import signal
import sys
import time

from PIL import Image

from geodistil.sandbox import runner, seccomp
from geodistil.sandbox.lockdown import lock_down, layer_bits
from geodistil.sandbox.protocol import (
    JOB_ALLOW_WEAK, JOB_PROBE, MAX_RESULT_BYTES, READY, RESULT_HEADER_BYTES, STATUS_INTERNAL, STATUS_PROBE,
    STATUS_REFUSED, VERDICT_EXITED, VERDICT_OVERSIZE, VERDICT_RESULT, VERDICT_SIGNALED, VERDICT_TIMEOUT, Job,
    Result, Scratch, encode_result, pixel_bytes, read_job, reply_header, result_length, write_all,
)
from geodistil.sandbox.wire import raw_strips

_CHILD_FAILED = 70  # the child's exit status when it could not even report


_SECCOMP_PROGRAM = b""  # compiled once in main(), loaded by every child


def preload() -> None:
    """Import and exercise everything the code may touch, while files can still be opened."""
    import numpy as np
    import numpy.fft  # noqa: F401
    import numpy.linalg  # noqa: F401
    from PIL import (  # noqa: F401
        Image, ImageChops, ImageColor, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageMath,
        ImageOps, ImageStat,
    )

    Image.init()  # every format plugin, so Image.open(BytesIO) works without a file lookup
    # keep freed image blocks for the next job's input image: reused pages cost a cheap fault,
    # fresh ones a slow one (zeroed, and in a VM often backed by the host on first touch)
    Image.core.set_blocks_max(4)
    sample = Image.new("RGB", (16, 16), (10, 20, 30))
    ImageDraw.Draw(sample).text((1, 1), "a", fill=(255, 255, 255))  # loads the default font
    ImageOps.autocontrast(ImageOps.grayscale(sample.filter(ImageFilter.GaussianBlur(1))))
    ImageEnhance.Contrast(sample).enhance(1.5)
    np.fft.fft2(np.asarray(sample, dtype=np.float64)[..., 0])
    np.linalg.svd(np.eye(3))
    np.random.default_rng(0).random(3)
    time.localtime()  # reads the time zone file once
    for name in ("collections", "colorsys", "functools", "itertools", "statistics", "string", "re"):
        __import__(name)


def _send(fd: int, result: Result, image: Image.Image | None) -> None:
    if image is None:
        write_all(fd, encode_result(result))
        return
    write_all(fd, encode_result(result, streamed_pixels=pixel_bytes(image.mode, image.width, image.height)))
    for strip in raw_strips(image):
        write_all(fd, [strip])


def _child(job: Job, image: Image.Image, result_fd: int, zygote_pid: int) -> None:
    """The forked child: lock down, run, write the Result, exit. Never returns to the zygote loop."""
    status = _CHILD_FAILED
    try:
        layers = lock_down(zygote_pid=zygote_pid, keep_fd=result_fd, timeout_s=job.timeout_s,
                           memory_bytes=job.memory_bytes, seccomp_program=_SECCOMP_PROGRAM)
        bits = layer_bits(layers)
        missing = [s for s in layers if not s.active]
        out_image = None
        if job.flags & JOB_PROBE:
            report = json.dumps([{"name": s.name, "active": s.active, "detail": s.detail} for s in layers])
            result = Result(STATUS_PROBE, bits, report, "")
        elif missing and not job.flags & JOB_ALLOW_WEAK:
            reasons = "; ".join(f"{s.name}: {s.detail}" for s in missing)
            result = Result(STATUS_REFUSED, bits, "", f"sandbox layers unavailable, code not run ({reasons})")
        else:
            result, out_image = runner.run(job, image, bits)
        _send(result_fd, result, out_image)
        status = 0
    except BaseException as exc:  # noqa: BLE001 - report anything, then exit below
        try:
            write_all(result_fd, encode_result(Result(STATUS_INTERNAL, 0, "", f"{type(exc).__name__}: {exc}")))
        except BaseException:  # noqa: BLE001 - the pipe is gone; the exit status says enough
            pass
    finally:
        os._exit(status)


def _wait_exit(pid: int, pidfd: int, deadline: float) -> tuple[int, int]:
    """The verdict on a child that closed its pipe without a complete Result."""
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not select.select([pidfd], [], [], remaining)[0]:
        return VERDICT_TIMEOUT, 0
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return VERDICT_SIGNALED, os.WTERMSIG(status)
    return VERDICT_EXITED, os.WEXITSTATUS(status)


def _read_into(fd: int, view: memoryview, deadline: float) -> int | None:
    """Bytes read into ``view`` (0 at end of stream), or None once the deadline has passed."""
    while (remaining := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], remaining)[0]:
            return os.readv(fd, [view])
    return None


def _collect(pid: int, pidfd: int, result_fd: int, deadline: float) -> tuple[int, int, bytearray]:
    """Read the child's Result until it is complete, the child ends, or the deadline passes.

    The reply goes out as soon as the announced length has arrived, not after the child's
    exit: tearing down a forked address space takes milliseconds nobody needs to wait for.
    """
    head = bytearray(RESULT_HEADER_BYTES)
    target, got = head, 0
    while True:
        count = _read_into(result_fd, memoryview(target)[got:], deadline)
        if count is None:
            return VERDICT_TIMEOUT, 0, bytearray()
        if count == 0:
            verdict, code = _wait_exit(pid, pidfd, deadline)
            return verdict, code, bytearray()
        got += count
        if got < len(target):
            continue
        if target is not head:
            return VERDICT_RESULT, 0, target
        expected = result_length(head)
        if expected > MAX_RESULT_BYTES:
            return VERDICT_OVERSIZE, 0, bytearray()
        target = bytearray(expected)  # one buffer of the announced size: no regrowth copies
        target[:got] = head
        if got == expected:
            return VERDICT_RESULT, 0, target


def _supervise(job: Job, reply_out: int) -> None:
    read_fd, write_fd = os.pipe()
    try:  # a 1 MiB pipe moves a 1024x768 result in three reads instead of forty
        fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass
    start = time.monotonic()
    # built here, before the fork: the child inherits it without a copy (or a page fault)
    image = Image.frombytes(job.mode, (job.width, job.height), job.pixels)
    zygote_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        _child(job, image, write_fd, zygote_pid)
    del image
    os.close(write_fd)
    pidfd = os.pidfd_open(pid)
    try:
        verdict, code, payload = _collect(pid, pidfd, read_fd, start + job.timeout_s)
        write_all(reply_out, [reply_header(job.job_id, verdict, code, time.monotonic() - start, len(payload)),
                              payload])
    finally:
        # the child is done, late or misbehaving: it goes now (by pidfd, never a recycled pid)
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:  # already reaped by _wait_exit
            pass
        os.close(pidfd)
        os.close(read_fd)


def _claim_protocol_fds() -> tuple[int, int]:
    """Move the protocol pipes off fds 0 and 1, so a stray print cannot corrupt a frame."""
    job_in, reply_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    return job_in, reply_out


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the pool decides when zygotes end
    job_in, reply_out = _claim_protocol_fds()
    global _SECCOMP_PROGRAM
    preload()
    try:
        _SECCOMP_PROGRAM = seccomp.compile_program()
    except OSError as exc:  # the child reports the layer as missing; the zygote keeps serving
        sys.stderr.write(f"geodistil sandbox: could not compile the seccomp filter: {exc}\n")
    write_all(reply_out, [READY])
    gc.collect()
    gc.freeze()  # children touching refcounts is enough copy-on-write; a GC pass over the whole heap is not
    scratch = Scratch()
    while (job := read_job(job_in, scratch)) is not None:
        _supervise(job, reply_out)

