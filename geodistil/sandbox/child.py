"""The forked child: lock itself down, run one job, answer, exit.

It never returns into the zygote's loop: every path ends in ``os._exit``.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import NoReturn

from PIL import Image

from geodistil.sandbox import runner
from geodistil.sandbox.lockdown import LayerStatus, layer_bits, lock_down
from geodistil.sandbox.protocol import (
    JOB_ALLOW_WEAK, JOB_PROBE, STATUS_INTERNAL, STATUS_PROBE, STATUS_REFUSED, Job, Result, encode_result, pixel_bytes,
    write_all,
)
from geodistil.sandbox.wire import raw_strips

FAILED_EXIT = 70  # the exit status when the child could not even report


def _decide(job: Job, image: Image.Image, layers: list[LayerStatus]) -> tuple[Result, Image.Image | None]:
    bits = layer_bits(layers)
    if job.flags & JOB_PROBE:
        report = json.dumps([{"name": s.name, "active": s.active, "detail": s.detail} for s in layers])
        return Result(STATUS_PROBE, bits, report, ""), None
    missing = [s for s in layers if not s.active]
    if missing and not job.flags & JOB_ALLOW_WEAK:
        reasons = "; ".join(f"{s.name}: {s.detail}" for s in missing)
        return Result(STATUS_REFUSED, bits, "", f"sandbox layers unavailable, code not run ({reasons})"), None
    result, out_image = runner.run(job, image, bits)
    if out_image is None:
        return result, None
    return replace(result, pixel_len=pixel_bytes(out_image.mode, out_image.width, out_image.height)), out_image


def child_main(job: Job, image: Image.Image, *, result_fd: int, zygote_pid: int,
               seccomp_program: bytes) -> NoReturn:
    status = FAILED_EXIT
    try:
        layers = lock_down(zygote_pid=zygote_pid, keep_fd=result_fd, timeout_s=job.timeout_s,
                           memory_bytes=job.memory_bytes, seccomp_program=seccomp_program)
        result, out_image = _decide(job, image, layers)
        write_all(result_fd, encode_result(result))
        if out_image is not None:
            for strip in raw_strips(out_image):
                write_all(result_fd, strip)
        status = 0
    except BaseException as exc:  # noqa: BLE001 - report anything, then exit below
        try:
            write_all(result_fd, encode_result(Result(STATUS_INTERNAL, 0, "", f"{type(exc).__name__}: {exc}")))
        except BaseException:  # noqa: BLE001 - the pipe is gone; the exit status says enough
            pass
    finally:
        os._exit(status)
