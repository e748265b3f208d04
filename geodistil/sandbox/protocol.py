"""The framing between the parent, a zygote and the child it forks per job.

Small messages go through pipes, each a fixed little-endian header followed by raw bytes:

* ``Job``      parent -> zygote: limits, flags, the code, and the input image's layout.
* ``Result``   child  -> zygote: status, active-layer bits, the output layout, printed text,
  error, then the raw pixels.
* ``Reply``    zygote -> parent: the zygote's verdict (timeout, signal, ...) wrapping the Result
  without its pixels.

Between the parent and a zygote, pixels travel raw through shared memory instead: one memfd
per zygote holding an input window and an output window of ``WINDOW_BYTES`` each (pipe copies
of a 1024x768 image cost more than the rest of a call). The zygote maps it ``MADV_DONTFORK``,
so no child ever sees it; it reads the child's pixels from the pipe straight into the output
window, so what the parent reads cannot change under it.

Layer "result validation": nothing from the child is ever unpickled or evaluated. The parent
reads integers, UTF-8 text and pixel bytes, and checks every length, the mode and the size
against the limits below before it builds an image.

Only the standard library (and ``geodistil.errors``, itself standard library only) is imported
here: the zygote loads this module too.
"""

from __future__ import annotations

import os
import select
import struct
import time
from dataclasses import dataclass

from geodistil.errors import ProtocolError

MAX_CODE_BYTES = 100_000
MAX_SIDE = 16_384
MAX_PIXELS = 25_000_000  # 5000x5000; larger results are pointless for a teacher and costly to move
MAX_STDOUT_BYTES = 64 * 1024
MAX_ERROR_BYTES = 16 * 1024

# The pixel layouts allowed across the boundary, with bytes per pixel ("1" is packed bits).
# Everything else (P, I;16, YCbCr, ...) is converted to one of these first, so raw bytes
# alone rebuild the image exactly (a palette would not survive ``tobytes``).
MODE_BYTES: dict[str, int] = {"1": 0, "L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4, "I": 4, "F": 4}
WINDOW_BYTES = MAX_PIXELS * 4  # the largest allowed image in the widest mode

# Layers the child applies to itself; each owns one bit of ``Result.layers``.
CHILD_LAYERS: tuple[str, ...] = (
    "parent_death_signal", "closed_fds", "chdir_root", "uid_drop", "not_dumpable",
    "no_new_privs", "rlimits", "landlock", "seccomp",
)
ALL_CHILD_LAYERS = (1 << len(CHILD_LAYERS)) - 1

JOB_ALLOW_WEAK = 1  # run the code even when a layer could not be applied
JOB_PROBE = 2  # apply the layers, report them, run no code

STATUS_OK, STATUS_CODE_ERROR, STATUS_REFUSED, STATUS_INTERNAL, STATUS_PROBE = 0, 1, 2, 3, 4
# the zygote's verdicts: a complete Result arrived, or the child ended without one, ran out of
# time, was killed by a signal, or announced more than any valid Result holds
VERDICT_RESULT, VERDICT_EXITED, VERDICT_TIMEOUT, VERDICT_SIGNALED, VERDICT_OVERSIZE = 0, 1, 2, 3, 4

READY = b"GDZREADY"  # the zygote's first eight bytes: imports done, jobs welcome

_JOB = struct.Struct("<4sIdQII8sII")
_RESULT = struct.Struct("<4sB3xI8sIIIIQ")
_REPLY = struct.Struct("<4sIB3xidI")
_JOB_MAGIC, _RESULT_MAGIC, _REPLY_MAGIC = b"GDJ1", b"GDC1", b"GDR1"
RESULT_HEADER_BYTES = _RESULT.size
MAX_RESULT_BYTES = _RESULT.size + MAX_STDOUT_BYTES + MAX_ERROR_BYTES  # up to the pixels


def pixel_bytes(mode: str, width: int, height: int) -> int:
    """The exact length of ``Image.tobytes()`` for this layout."""
    per_pixel = MODE_BYTES[mode]
    if per_pixel == 0:  # mode "1": eight pixels a byte, each row padded to a whole byte
        return (width + 7) // 8 * height
    return width * height * per_pixel


def check_layout(mode: str, width: int, height: int) -> str | None:
    """Why an image layout may not cross the boundary, or None when it may."""
    if mode not in MODE_BYTES:
        return f"image mode {mode!r} is not supported (use one of {sorted(MODE_BYTES)})"
    return check_size(width, height)


def check_size(width: int, height: int) -> str | None:
    """Why an image of this size may not cross the boundary, or None when it may."""
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        return f"image size {width}x{height} is out of range (each side 1..{MAX_SIDE})"
    if width * height > MAX_PIXELS:
        return f"image of {width}x{height} has more than {MAX_PIXELS} pixels"
    return None


def _mode_field(mode: str) -> bytes:
    return mode.encode("ascii").ljust(8, b"\0")


def _mode_of(field: bytes) -> str:
    return field.rstrip(b"\0").decode("ascii", errors="replace")


@dataclass(frozen=True)
class Job:
    """One run; its input pixels are in the parent's input window, ``pixel_bytes`` long."""

    job_id: int
    timeout_s: float
    memory_bytes: int
    flags: int
    code: bytes
    mode: str
    width: int
    height: int

    def header(self) -> bytes:
        return _JOB.pack(_JOB_MAGIC, self.job_id, self.timeout_s, self.memory_bytes, self.flags, len(self.code),
                         _mode_field(self.mode), self.width, self.height)

    @property
    def pixel_len(self) -> int:
        return pixel_bytes(self.mode, self.width, self.height)


def read_job(fd: int) -> Job | None:
    """The next job from the parent, or None at end of stream (the parent went away)."""
    head = read_exact(fd, _JOB.size, eof_ok=True)
    if head is None:
        return None
    magic, job_id, timeout_s, memory, flags, code_len, mode_f, width, height = _JOB.unpack(head)
    mode = _mode_of(mode_f)
    if magic != _JOB_MAGIC or code_len > MAX_CODE_BYTES or check_layout(mode, width, height):
        raise ProtocolError("malformed job header")
    code = read_exact(fd, code_len)
    assert code is not None
    return Job(job_id, timeout_s, memory, flags, bytes(code), mode, width, height)


@dataclass(frozen=True)
class Result:
    status: int
    layers: int
    stdout: str
    error: str
    mode: str = ""
    width: int = 0
    height: int = 0
    pixel_len: int = 0  # raw pixel bytes that follow the Result on the pipe
    pixels: memoryview | None = None  # on the parent's side: a view of its output window


def encode_result(result: Result) -> bytes:
    """The child's answer up to its pixels, which the child then streams (``pixel_len`` bytes)."""
    out = result.stdout.encode("utf-8", errors="replace")[:MAX_STDOUT_BYTES]
    err = result.error.encode("utf-8", errors="replace")[:MAX_ERROR_BYTES]
    head = _RESULT.pack(_RESULT_MAGIC, result.status, result.layers, _mode_field(result.mode), result.width,
                        result.height, len(out), len(err), result.pixel_len)
    return head + out + err


def result_lengths(header: bytes | bytearray) -> tuple[int, int]:
    """(bytes up to the pixels, pixel bytes) a Result announces; checked later, by the parent."""
    _, _, _, _, _, _, out_len, err_len, pix_len = _RESULT.unpack_from(header)
    return _RESULT.size + out_len + err_len, pix_len


def decode_result(payload: bytes | bytearray, window: memoryview) -> Result:
    """Parse and validate a child's answer; pixels are a view of ``window``. Raises ProtocolError."""
    if len(payload) < _RESULT.size:
        raise ProtocolError("result shorter than its header")
    magic, status, layers, mode_f, width, height, out_len, err_len, pix_len = _RESULT.unpack_from(payload)
    if magic != _RESULT_MAGIC or status > STATUS_PROBE:
        raise ProtocolError("result header is malformed")
    if out_len > MAX_STDOUT_BYTES or err_len > MAX_ERROR_BYTES or layers > ALL_CHILD_LAYERS:
        raise ProtocolError("result header is out of bounds")
    if _RESULT.size + out_len + err_len != len(payload):
        raise ProtocolError("result length does not match its header")
    mode = _mode_of(mode_f)
    if status == STATUS_OK:
        problem = check_layout(mode, width, height)
        if problem:
            raise ProtocolError(problem)
        if pix_len != pixel_bytes(mode, width, height) or pix_len > len(window):
            raise ProtocolError("result pixel length does not match its mode and size")
    elif pix_len:
        raise ProtocolError("a failed result carries pixels")
    view = memoryview(payload)
    start = _RESULT.size
    stdout = bytes(view[start:start + out_len]).decode("utf-8", errors="replace")
    error = bytes(view[start + out_len:]).decode("utf-8", errors="replace")
    return Result(status, layers, stdout, error, mode, width, height, pix_len, window[:pix_len])


@dataclass(frozen=True)
class Reply:
    job_id: int
    verdict: int
    code: int  # exit status for VERDICT_EXITED, signal number for VERDICT_SIGNALED, else 0
    elapsed_s: float
    payload: bytes | bytearray  # the child's Result (pipe part), empty unless VERDICT_RESULT


def reply_header(job_id: int, verdict: int, code: int, elapsed_s: float, payload_len: int) -> bytes:
    return _REPLY.pack(_REPLY_MAGIC, job_id, verdict, code, elapsed_s, payload_len)


def read_reply(fd: int, deadline: float) -> Reply:
    head = read_exact(fd, _REPLY.size, deadline=deadline)
    assert head is not None
    magic, job_id, verdict, code, elapsed, length = _REPLY.unpack(head)
    if magic != _REPLY_MAGIC or verdict > VERDICT_OVERSIZE or length > MAX_RESULT_BYTES:
        raise ProtocolError("malformed reply header")
    payload = read_exact(fd, length, deadline=deadline)
    assert payload is not None
    return Reply(job_id, verdict, code, elapsed, payload)


def read_exact(fd: int, n: int, *, deadline: float | None = None, eof_ok: bool = False) -> bytearray | None:
    """Exactly ``n`` bytes from a pipe.

    ``deadline`` is a ``time.monotonic()`` instant; past it, TimeoutError. End of stream before
    the first byte returns None when ``eof_ok``; anywhere else it is a torn frame.
    """
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("no complete frame before the deadline")
        count = os.readv(fd, [view[got:]])
        if count == 0:
            if got == 0 and eof_ok:
                return None
            raise ProtocolError(f"stream ended after {got} of {n} bytes")
        got += count
    return buf


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte, resuming after partial writes."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]
