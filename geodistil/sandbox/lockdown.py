"""What the forked child does to itself before it runs one job's code.

The layers, in the order they are applied (each named as in ``protocol.CHILD_LAYERS``):

1. ``parent_death_signal`` SIGKILL when the zygote dies, so no orphan keeps running.
2. ``closed_fds``          every descriptor closed but the result pipe (no stdin, no zygote pipes).
3. ``chdir_root``          ``/`` as working directory, so no relative path means anything.
4. ``uid_drop``            when root: groups, gid and uid set to nobody (65534), all three ids.
5. ``not_dumpable``        no core dumps, no ``/proc/<pid>/mem`` or ptrace from same-uid processes.
6. ``no_new_privs``        no setuid binary or file capability can give privileges back.
7. ``rlimits``             address space, CPU seconds, file size 0, few files, no processes, no core.
8. ``landlock``            see ``landlock.py``.
9. ``seccomp``             see ``seccomp.py``; last, because it forbids the calls above. The
                           zygote compiles the filter once; the child only loads it.

Each step reports (active, detail); the caller decides whether a missing layer is acceptable.
"""

from __future__ import annotations

import ctypes
import math
import os
import resource
import signal
from dataclasses import dataclass

from geodistil.sandbox import landlock, seccomp
from geodistil.sandbox.protocol import CHILD_LAYERS

NOBODY = 65534
MAX_OPEN_FILES = 16

_PR_SET_PDEATHSIG, _PR_GET_DUMPABLE, _PR_SET_DUMPABLE = 1, 3, 4
_PR_SET_NO_NEW_PRIVS, _PR_GET_NO_NEW_PRIVS = 38, 39

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class LayerStatus:
    name: str
    active: bool
    detail: str


def _prctl(option: int, arg: int = 0) -> int:
    return int(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0),
                           ctypes.c_ulong(0), ctypes.c_ulong(0)))


def _parent_death_signal(zygote_pid: int) -> tuple[bool, str]:
    if _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        return False, os.strerror(ctypes.get_errno())
    if os.getppid() != zygote_pid:  # the zygote died before the signal was armed
        os._exit(1)
    return True, "SIGKILL when the zygote exits"


def _close_fds(keep: int) -> tuple[bool, str]:
    os.closerange(0, keep)
    os.closerange(keep + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    return True, "only the result pipe stays open"


def _chdir_root() -> tuple[bool, str]:
    os.chdir("/")
    return True, "working directory /"


def _uid_drop() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return True, f"not root: runs as uid {os.geteuid()} (seccomp and Landlock keep it from its siblings)"
    try:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
    except OSError as exc:
        return False, f"could not become nobody ({NOBODY}): {exc}"
    if os.getresuid() != (NOBODY,) * 3 or os.getresgid() != (NOBODY,) * 3:
        return False, "uid/gid did not change"
    return True, f"root dropped to nobody ({NOBODY}:{NOBODY}), no supplementary groups"


def _not_dumpable() -> tuple[bool, str]:
    # after the uid change: changing credentials resets the flag from fs.suid_dumpable
    _prctl(_PR_SET_DUMPABLE, 0)
    if _prctl(_PR_GET_DUMPABLE) != 0:
        return False, "PR_SET_DUMPABLE did not take"
    return True, "PR_SET_DUMPABLE 0"


def _no_new_privs() -> tuple[bool, str]:
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    if _prctl(_PR_GET_NO_NEW_PRIVS) != 1:
        return False, "PR_SET_NO_NEW_PRIVS did not take"
    return True, "PR_SET_NO_NEW_PRIVS 1"


def _rlimits(timeout_s: float, memory_bytes: int) -> tuple[bool, str]:
    cpu = max(1, math.ceil(timeout_s))
    limits = {
        resource.RLIMIT_AS: (memory_bytes, memory_bytes),
        resource.RLIMIT_CPU: (cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL one second later
        resource.RLIMIT_FSIZE: (0, 0),
        resource.RLIMIT_NOFILE: (MAX_OPEN_FILES, MAX_OPEN_FILES),
        resource.RLIMIT_NPROC: (0, 0),
        resource.RLIMIT_CORE: (0, 0),
    }
    try:
        for which, pair in limits.items():
            resource.setrlimit(which, pair)
    except (OSError, ValueError) as exc:
        return False, f"setrlimit failed: {exc}"
    return True, (f"address space {memory_bytes >> 20} MiB, CPU {cpu}/{cpu + 1} s, file size 0, "
                  f"{MAX_OPEN_FILES} files, 0 processes, no core")


def lock_down(*, zygote_pid: int, keep_fd: int, timeout_s: float, memory_bytes: int,
              seccomp_program: bytes) -> list[LayerStatus]:
    """Apply every layer to this process, in order; one LayerStatus per ``CHILD_LAYERS`` entry."""
    steps = {
        "parent_death_signal": lambda: _parent_death_signal(zygote_pid),
        "closed_fds": lambda: _close_fds(keep_fd),
        "chdir_root": _chdir_root,
        "uid_drop": _uid_drop,
        "not_dumpable": _not_dumpable,
        "no_new_privs": _no_new_privs,
        "rlimits": lambda: _rlimits(timeout_s, memory_bytes),
        "landlock": landlock.restrict_self,
        "seccomp": lambda: seccomp.load_program(seccomp_program),
    }
    assert tuple(steps) == CHILD_LAYERS
    statuses = []
    for name, step in steps.items():
        try:
            active, detail = step()
        except Exception as exc:  # a layer that breaks is reported as missing, never skipped silently
            active, detail = False, f"{type(exc).__name__}: {exc}"
        statuses.append(LayerStatus(name, active, detail))
    return statuses


def layer_bits(statuses: list[LayerStatus]) -> int:
    return sum(1 << CHILD_LAYERS.index(s.name) for s in statuses if s.active)
