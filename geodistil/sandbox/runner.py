"""Inside the locked-down child: run one job's code on its image and build the ``Result``.

The contract the teacher is told: the code sees ``image`` (a PIL image) and the pre-bound
``Image, ImageOps, ImageEnhance, ImageFilter, ImageDraw, np, math``; it sets ``result_image``;
what it prints comes back as text. Randomness is seeded before every run, so the same code on
the same image gives the same pixels (replay checks this by hash).
"""

from __future__ import annotations

import builtins
import io
import math
import random
import sys
import traceback

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from geodistil.sandbox.protocol import MAX_STDOUT_BYTES, STATUS_CODE_ERROR, STATUS_OK, Job, Result, check_size
from geodistil.sandbox.wire import to_wire_image

CODE_FILENAME = "<code>"
RANDOM_SEED = 0


class _CappedText(io.TextIOBase):
    """A stdout that keeps the first MAX_STDOUT_BYTES characters and drops the rest."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._size = 0
        self.truncated = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        room = MAX_STDOUT_BYTES - self._size
        if len(text) > room:
            self.truncated = True
        kept = text[:max(room, 0)]
        self._parts.append(kept)
        self._size += len(kept)
        return len(text)

    def getvalue(self) -> str:
        return "".join(self._parts) + ("\n[output truncated]" if self.truncated else "")


def _namespace(image: Image.Image) -> dict[str, object]:
    return {
        "__builtins__": builtins, "__name__": "__main__",
        "image": image, "Image": Image, "ImageOps": ImageOps, "ImageEnhance": ImageEnhance,
        "ImageFilter": ImageFilter, "ImageDraw": ImageDraw, "np": np, "math": math,
    }


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - the code's own exception class may break __str__
        return "<unprintable message>"


def _describe(exc: BaseException, memory_bytes: int) -> str:
    """Exception type, message and the line of the code it came from."""
    if isinstance(exc, SyntaxError) and exc.filename == CODE_FILENAME:
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        snippet = f": {exc.text.strip()}" if exc.text and exc.text.strip() else ""
        return f"{type(exc).__name__}: {exc.msg} ({where}){snippet}"
    if isinstance(exc, MemoryError):
        detail = _message(exc) or "out of memory"
        return f"MemoryError: {detail} (the sandbox allows {memory_bytes >> 20} MiB)"
    # walk_tb, not extract_tb: no attempt to read library sources (no file may be opened here)
    lines = [line for frame, line in traceback.walk_tb(exc.__traceback__)
             if frame.f_code.co_filename == CODE_FILENAME]
    where = f" (line {lines[-1]})" if lines else ""
    return f"{type(exc).__name__}: {_message(exc)}{where}"


def _result_problem(value: object) -> str | None:
    if value is None:
        return "the code did not set result_image (assign a PIL image to result_image)"
    if not isinstance(value, Image.Image):
        return f"result_image must be a PIL.Image.Image, got {type(value).__name__}"
    return check_size(value.width, value.height)


def run(job: Job, image: Image.Image, layers: int) -> tuple[Result, Image.Image | None]:
    """Execute ``job.code`` on ``image``: the Result, and the image whose pixels the caller sends.

    Every failure becomes an error Result, never an exception.
    """
    random.seed(RANDOM_SEED)
    np.random.seed(RANDOM_SEED)
    stdout = _CappedText()
    sys.stdout = sys.stderr = stdout
    try:
        namespace = _namespace(image)
        compiled = compile(job.code.decode("utf-8", errors="replace"), CODE_FILENAME, "exec")
        exec(compiled, namespace)  # noqa: S102 - this process is the sandbox
        value = namespace.get("result_image")
        problem = _result_problem(value)
        if problem:
            return Result(STATUS_CODE_ERROR, layers, stdout.getvalue(), problem), None
        assert isinstance(value, Image.Image)
        wire = to_wire_image(value)
        wire.load()  # a lazy image must fail here, inside the error handling, not while streaming
        return Result(STATUS_OK, layers, stdout.getvalue(), "", wire.mode, wire.width, wire.height), wire
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt are errors of the code too
        return Result(STATUS_CODE_ERROR, layers, stdout.getvalue(), _describe(exc, job.memory_bytes)), None
