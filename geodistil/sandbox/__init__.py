"""Isolated execution of model-written Python on an image.

Public API::

    run_code(code, image, timeout=10.0) -> SandboxResult(ok, image, stdout, error)
    sandbox_check() -> SandboxReport (layers: name, active, detail; .ok)
    configure(workers=..., allow_weak=..., memory_bytes=...)

The code never runs in the geodistil process. A process-wide pool of zygotes (started lazily,
closed at exit) forks one child per call; the child applies the isolation layers listed in
``check.SandboxReport`` and ``lockdown.py`` before it runs anything. Where a layer cannot be
applied on this machine, ``run_code`` raises ``SandboxUnavailable`` (a ``SandboxError``) unless the user accepted weaker
isolation (``GEODISTIL_SANDBOX_ALLOW_WEAK=1`` or ``configure(allow_weak=True)``).
See docs/sandbox.md.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from dataclasses import dataclass, replace

from PIL import Image

from geodistil.errors import SandboxError, SandboxUnavailable
from geodistil.sandbox.check import Layer, SandboxReport, parent_layers, parse_probe, probe_job
from geodistil.sandbox.pool import ZygotePool
from geodistil.sandbox.protocol import JOB_ALLOW_WEAK, MAX_CODE_BYTES, Job, ProtocolError, check_size
from geodistil.sandbox.result import WEAK_HINT, SandboxResult, interpret
from geodistil.sandbox.wire import to_wire_image

__all__ = ["Layer", "SandboxError", "SandboxReport", "SandboxResult", "SandboxSettings", "configure",
           "run_code", "sandbox_check", "shutdown"]

log = logging.getLogger(__name__)

MAX_TIMEOUT_S = 60.0


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class SandboxSettings:
    workers: int = 2
    allow_weak: bool = False
    memory_bytes: int = 1 << 30  # RLIMIT_AS of each child

    @classmethod
    def from_env(cls) -> SandboxSettings:
        return cls(workers=int(os.environ.get("GEODISTIL_SANDBOX_WORKERS", "2")),
                   allow_weak=_env_flag("GEODISTIL_SANDBOX_ALLOW_WEAK"))


class _State:
    """The process-wide pool, started on first use; one lock guards start, stop and settings."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.settings = SandboxSettings.from_env()
        self.pool: ZygotePool | None = None
        self.report: SandboxReport | None = None
        self.hooks_registered = False


_state = _State()


def configure(*, workers: int | None = None, allow_weak: bool | None = None,
              memory_bytes: int | None = None) -> SandboxSettings:
    """Change the settings; a running pool is closed and the next call starts a new one."""
    changes = {k: v for k, v in {"workers": workers, "allow_weak": allow_weak,
                                 "memory_bytes": memory_bytes}.items() if v is not None}
    shutdown()
    with _state.lock:
        _state.settings = replace(_state.settings, **changes)
        return _state.settings


def shutdown() -> None:
    """Close the pool (its zygotes exit). Registered at exit; safe to call twice."""
    with _state.lock:
        pool, _state.pool, _state.report = _state.pool, None, None
    if pool is not None:
        pool.close()


def _probe(pool: ZygotePool, settings: SandboxSettings) -> SandboxReport:
    before, after = parent_layers(10.0)
    try:
        job, image = probe_job(pool.next_job_id(), settings.memory_bytes)
        child = pool.submit(job, image, lambda reply, window: parse_probe(reply.payload, window))
    except (SandboxError, ProtocolError, ValueError) as exc:
        child = [Layer("child_layers", False, f"the probe child failed: {exc}")]
    return SandboxReport(before + child + after, allow_weak=settings.allow_weak)


def _started() -> tuple[ZygotePool, SandboxReport, SandboxSettings]:
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable(f"the code sandbox needs Linux (Landlock, seccomp, memfd); this is {sys.platform}")
    with _state.lock:
        if _state.pool is None or _state.report is None:
            if not _state.hooks_registered:  # here, not at import: zygotes import this package too
                atexit.register(shutdown)
                os.register_at_fork(after_in_child=_forget_after_fork)
                _state.hooks_registered = True
            pool = ZygotePool(_state.settings.workers)
            report = _probe(pool, _state.settings)
            if not report.ok:  # said once, loudly, at start-up
                level = logging.WARNING if report.allow_weak else logging.ERROR
                log.log(level, "code sandbox is missing layers %s:\n%s", report.missing, report)
            _state.pool, _state.report = pool, report
        return _state.pool, _state.report, _state.settings


def sandbox_check() -> SandboxReport:
    """Each isolation layer and whether it is active here, from a fresh probe child."""
    pool, _, settings = _started()
    return _probe(pool, settings)


def run_code(code: str, image: Image.Image, timeout: float = 10.0) -> SandboxResult:
    """Run ``code`` on ``image`` in a sandbox child; see the module docstring for the contract."""
    if not 0 < timeout <= MAX_TIMEOUT_S:
        raise ValueError(f"timeout must be in (0, {MAX_TIMEOUT_S:g}] seconds, got {timeout}")
    code_bytes = code.encode("utf-8", errors="replace")
    if len(code_bytes) > MAX_CODE_BYTES:
        return SandboxResult(False, None, "", f"the code is longer than {MAX_CODE_BYTES} bytes")
    wire = to_wire_image(image)
    problem = check_size(wire.width, wire.height)
    if problem:
        return SandboxResult(False, None, "", f"input {problem}")
    pool, report, settings = _started()
    if not report.usable:
        raise SandboxUnavailable(f"code sandbox is missing layers {report.missing}; {WEAK_HINT}")
    job = Job(pool.next_job_id(), float(timeout), settings.memory_bytes,
              JOB_ALLOW_WEAK if settings.allow_weak else 0, code_bytes, wire.mode, wire.width, wire.height)
    return pool.submit(job, wire, lambda reply, window: interpret(
        reply, window, timeout_s=timeout, memory_bytes=settings.memory_bytes, allow_weak=settings.allow_weak))


def _forget_after_fork() -> None:
    # a forked copy of this process (multiprocessing) must not share the zygotes' pipes
    global _state
    _state = _State()
    _state.hooks_registered = True
