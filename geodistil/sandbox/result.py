"""What one run of code gave: ``SandboxResult``, built from a zygote's reply after validation.

Failures of the code (an exception, a timeout, the memory limit, a missing ``result_image``)
are results with ``ok=False`` and an error the teacher can act on. Failures of the sandbox
itself (a layer missing without opt-in, a broken child report) raise ``SandboxError``.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from PIL import Image

from geodistil.errors import SandboxError, SandboxUnavailable
from geodistil.sandbox.protocol import (
    ALL_CHILD_LAYERS, CHILD_LAYERS, STATUS_CODE_ERROR, STATUS_OK, STATUS_REFUSED, VERDICT_EXITED,
    VERDICT_OVERSIZE, VERDICT_SIGNALED, VERDICT_TIMEOUT, ProtocolError, Reply, decode_result,
)

WEAK_HINT = ("run `geodistil sandbox-check` for details, or set GEODISTIL_SANDBOX_ALLOW_WEAK=1 "
             "to accept weaker isolation")


@dataclass(frozen=True)
class SandboxResult:
    ok: bool
    image: Image.Image | None
    stdout: str
    error: str | None
    elapsed_s: float = 0.0


def _failure(error: str, reply: Reply, stdout: str = "") -> SandboxResult:
    return SandboxResult(False, None, stdout, error, reply.elapsed_s)


def _signal_error(signum: int, timeout_s: float, memory_bytes: int) -> str:
    if signum == signal.SIGXCPU:
        return f"TimeoutError: the code used more than {timeout_s:g} s of CPU time and was stopped"
    if signum == signal.SIGSYS:
        return "the code made a forbidden system call and was killed"
    name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
    return (f"the code crashed the interpreter ({name}); this is often a native library running out "
            f"of memory under the {memory_bytes >> 20} MiB limit")


def interpret(reply: Reply, window: memoryview, *, timeout_s: float, memory_bytes: int,
              allow_weak: bool) -> SandboxResult:
    """The result of one run; ``window`` holds its pixels (copied out here, before it is reused)."""
    if reply.verdict == VERDICT_TIMEOUT:
        return _failure(f"TimeoutError: the code did not finish within {timeout_s:g} s and was stopped", reply)
    if reply.verdict == VERDICT_OVERSIZE:
        return _failure("the code's output exceeded the sandbox's size limits", reply)
    if reply.verdict == VERDICT_SIGNALED:
        return _failure(_signal_error(reply.code, timeout_s, memory_bytes), reply)
    if reply.verdict == VERDICT_EXITED:
        return _failure(f"the code ended the process (exit status {reply.code}) before returning a result", reply)
    try:
        result = decode_result(reply.payload, window)
    except ProtocolError as exc:  # only code that wrote to the pipe itself gets here
        return _failure(f"the sandbox received a malformed result: {exc}", reply)
    if result.status == STATUS_REFUSED:
        raise SandboxUnavailable(f"{result.error}; {WEAK_HINT}")
    if result.layers != ALL_CHILD_LAYERS and not allow_weak:
        missing = [name for i, name in enumerate(CHILD_LAYERS) if not result.layers >> i & 1]
        raise SandboxUnavailable(f"a sandbox child ran without layers {missing}; {WEAK_HINT}")
    if result.status == STATUS_CODE_ERROR:
        return _failure(result.error, reply, result.stdout)
    if result.status != STATUS_OK:
        raise SandboxError(f"the sandbox child failed before running the code: {result.error or result.status}")
    assert result.pixels is not None
    image = Image.frombytes(result.mode, (result.width, result.height), result.pixels)  # copies out of the window
    return SandboxResult(True, image, result.stdout, None, reply.elapsed_s)
