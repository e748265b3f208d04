"""Layer "seccomp": a syscall filter (pyseccomp over Debian's libseccomp2), the child's last layer.

Default allow, with EPERM for everything a geolocation image script has no business doing:
sockets, starting processes or programs, any use of a path (opening, inspecting, watching or
changing the file system), kernel objects that outlive the process (System V shared memory,
message queues and semaphores; POSIX message queues), tracing or signalling any process, and
the kernel's larger attack surfaces (io_uring, bpf, mount, namespaces, keyrings, modules). The
EPERM reaches the code as a clean ``PermissionError`` it can report. Syscalls of another
architecture (i386 ``int 0x80``, x32) kill the process, so they cannot be used to step around
the rules.

Paths are denied here although Landlock already refuses every open: Landlock checks an open
after the path is looked up (ENOENT or EACCES tells whether a host path exists) and does not
cover ``stat``, ``access``, ``readlink``, extended attributes or inotify at all. Denied before
the lookup, every path answers EPERM alike. Python needs none of them once the zygote has
preloaded what the code may use.

libseccomp takes milliseconds to compile the rules, so the zygote compiles them once
(``compile_program``) and each child only hands the finished BPF program to the kernel
(``load_program``, one prctl). That is why the filter holds no per-child value such as a pid:
sending signals is denied outright (the code has no reason to signal even itself).
"""

from __future__ import annotations

import ctypes
import errno
import os

import pyseccomp as sc

_DENIED = (
    # network
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    "sendto", "sendmsg", "sendmmsg", "recvfrom", "recvmsg", "recvmmsg", "setsockopt",
    # processes and programs (threads go through clone, handled below)
    "fork", "vfork", "execve", "execveat",
    # other processes (and signals to any process, this one included)
    "kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open", "pidfd_getfd",
    "pidfd_send_signal", "kcmp", "perf_event_open",
    # paths: opened (Landlock refuses it too, but only after the lookup), inspected, watched
    "open", "openat", "openat2", "creat", "open_by_handle_at", "name_to_handle_at", "uselib",
    "stat", "lstat", "newfstatat", "statx", "access", "faccessat", "faccessat2", "readlink", "readlinkat",
    "statfs", "chdir", "getxattr", "lgetxattr", "listxattr", "llistxattr",
    "inotify_init", "inotify_init1", "inotify_add_watch", "fanotify_init", "fanotify_mark",
    # paths: changed
    "mknod", "mknodat", "link", "linkat",
    "symlink", "symlinkat", "unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir",
    "mkdirat", "rmdir", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown",
    "fchownat", "truncate", "ftruncate", "utime", "utimes", "utimensat", "futimesat",
    "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
    "memfd_create", "memfd_secret",
    # kernel objects that outlive the process, beyond every memory limit, seen by later jobs
    "shmget", "shmat", "shmdt", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl",
    "semget", "semop", "semtimedop", "semctl", "ipc",
    "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
    # kernel attack surface and privileges
    "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "userfaultfd",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "move_mount", "open_tree",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "keyctl", "add_key", "request_key", "init_module", "finit_module", "delete_module",
    "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog",
    "personality", "prctl", "seccomp",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
    "setfsuid", "setfsgid", "capset",
)

# Newer than Debian 12's libseccomp 2.5.4, which cannot name them: path metadata, xattrs and
# the mount table. Their numbers are those of the unified table that every architecture but
# alpha and mips uses (``landlock_create_ruleset`` is 444 there), so they are added by number.
_DENIED_BY_NUMBER = {
    "statmount": 457, "listmount": 458, "setxattrat": 463, "getxattrat": 464, "listxattrat": 465,
    "removexattrat": 466, "open_tree_attr": 467, "file_getattr": 468, "file_setattr": 469,
}
_UNIFIED_TABLE_ANCHOR = ("landlock_create_ruleset", 444)

_CLONE_THREAD = 0x00010000


def _rule(flt: sc.SyscallFilter, action: int, name: str, *args: sc.Arg) -> None:
    number = sc.resolve_syscall(sc.Arch.NATIVE, name)
    if number == -1 and name in _DENIED_BY_NUMBER and _unified_table():
        number = _DENIED_BY_NUMBER[name]
    # still -1: no such syscall on this architecture (e.g. open or fork on arm64)
    if number != -1:
        flt.add_rule(action, number, *args)


def _unified_table() -> bool:
    name, number = _UNIFIED_TABLE_ANCHOR
    return sc.resolve_syscall(sc.Arch.NATIVE, name) == number


def compile_program() -> bytes:
    """The filter as a raw BPF program (``struct sock_filter`` array), built with libseccomp."""
    flt = sc.SyscallFilter(sc.ALLOW)
    flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    deny = sc.ERRNO(errno.EPERM)
    for name in (*_DENIED, *_DENIED_BY_NUMBER):
        _rule(flt, deny, name)
    # a process-creating clone lacks CLONE_THREAD; clone3 hides its flags in memory the
    # filter cannot read, so it answers ENOSYS and glibc falls back to plain clone
    _rule(flt, deny, "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_THREAD, 0))
    _rule(flt, sc.ERRNO(errno.ENOSYS), "clone3")
    fd = os.memfd_create("geodistil-seccomp")
    try:
        with os.fdopen(os.dup(fd), "wb") as out:
            flt.export_bpf(out)
        return os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
socket_af_unix = 1
_libc = ctypes.CDLL(None, use_errno=True)


def load_program(program: bytes) -> tuple[bool, str]:
    """Install a compiled filter on this (single-threaded) process; needs no_new_privs first."""
    if not program or len(program) % 8:
        return False, "no filter program (libseccomp could not build one)"
    buffer = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    if _libc.prctl(ctypes.c_int(_PR_SET_SECCOMP), ctypes.c_ulong(_SECCOMP_MODE_FILTER), ctypes.byref(prog),
                   ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        return False, f"the kernel refused the filter: {os.strerror(ctypes.get_errno())}"
    # proof by a denied call (prctl(PR_GET_SECCOMP) is itself denied now): a unix socket
    probe = _libc.socket(ctypes.c_int(socket_af_unix), ctypes.c_int(1), ctypes.c_int(0))
    if probe >= 0 or ctypes.get_errno() != errno.EPERM:
        if probe >= 0:
            os.close(probe)
        return False, "the filter was accepted but does not deny socket()"
    return True, (f"{len(_DENIED) + len(_DENIED_BY_NUMBER)} syscalls denied (sockets, exec, fork, every path, "
                  "System V IPC, signals, ptrace, io_uring, bpf, mount, ...); process clones denied")
