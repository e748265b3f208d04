"""Layer "landlock": the kernel's unprivileged access control, through raw syscalls (ctypes).

The child handles every file-system right its kernel knows and grants none, so after
``restrict_self`` it cannot open, create, truncate, remove or execute any path (reads of
``/etc/passwd`` and ``/proc/<pid>/environ`` included). It checks only after the path is looked
up, and leaves metadata alone (``stat``, ``access``, ``readlink``, extended attributes,
inotify): ``seccomp.py`` denies those. From ABI 4 it also handles TCP bind and connect with
no port allowed; from ABI 6 it scopes signals and abstract unix sockets to its own domain, so
it cannot signal the zygote or the geodistil process.

Landlock must be compiled in and enabled at boot (``lsm=...,landlock``); ``abi_version`` says
whether it is, without side effects, so the parent can probe it too.
"""

from __future__ import annotations

import ctypes
import os

# The same numbers on every architecture: Landlock arrived after the syscall tables were unified.
_SYS_CREATE_RULESET, _SYS_RESTRICT_SELF = 444, 446
_CREATE_RULESET_VERSION = 1

_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def abi_version() -> int:
    """The kernel's Landlock ABI (0 when Landlock is missing or disabled)."""
    version = _libc.syscall(ctypes.c_long(_SYS_CREATE_RULESET), None, ctypes.c_size_t(0),
                            ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def _fs_rights(abi: int) -> int:
    return _FS_RIGHTS_BY_ABI[max(v for v in _FS_RIGHTS_BY_ABI if v <= abi)]


def restrict_self() -> tuple[bool, str]:
    """Deny this thread (and anything it would start) all files, TCP and outside signals.

    Needs no_new_privs set first. Returns (active, detail).
    """
    abi = abi_version()
    if abi < 1:
        return False, "not available: kernel without Landlock, or Landlock not enabled at boot"
    attr = _RulesetAttr(handled_access_fs=_fs_rights(abi))
    size = 8  # the struct grew with the ABI; pass only the fields this kernel knows
    denied = ["all file-system access"]
    if abi >= 4:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
        size = 16
        denied.append("TCP bind/connect")
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
        size = 24
        denied.append("signals and abstract unix sockets outside the sandbox")
    fd = _libc.syscall(ctypes.c_long(_SYS_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size),
                       ctypes.c_uint32(0))
    if fd < 0:
        return False, f"landlock_create_ruleset failed: {os.strerror(ctypes.get_errno())}"
    try:
        if _libc.syscall(ctypes.c_long(_SYS_RESTRICT_SELF), ctypes.c_int(fd), ctypes.c_uint32(0)) != 0:
            return False, f"landlock_restrict_self failed: {os.strerror(ctypes.get_errno())}"
    finally:
        os.close(fd)
    return True, f"ABI {abi}: denies " + "; ".join(denied)
