"""The escape suite: code a hostile teacher might write, each attempt blocked with a clear error.

After every attempt the host is unchanged (nothing written, nothing received, no process
killed, no IPC object left) and the same pool still runs a normal job. The pool is started after a fake API key
is put in this process's environment, so the test can prove the children never see it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from geodistil import sandbox
from geodistil.images import pixel_sha256

FAKE_KEY = "sk-test-geodistil-fake-key-never-leak-0123456789"


@pytest.fixture(scope="module", autouse=True)
def pool_with_a_secret_in_the_parent() -> Iterator[None]:
    saved = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = FAKE_KEY
    sandbox.shutdown()  # the pool must start after the key is in the environment
    report = sandbox.sandbox_check()
    assert report.ok, f"the escape suite needs every isolation layer:\n{report}"
    yield
    sandbox.shutdown()
    if saved is None:
        os.environ.pop("OPENAI_API_KEY", None)
    else:
        os.environ["OPENAI_API_KEY"] = saved


@pytest.fixture
def drop_dir() -> Iterator[Path]:
    """A directory anyone may reach and write to, so only the sandbox can stop a write landing here.

    Not under pytest's tmp_path: its base is private to this user (0700), so a child running as
    nobody would be stopped by plain file permissions, and a broken sandbox would go unnoticed.
    """
    path = Path(tempfile.mkdtemp(prefix="geodistil-drop-", dir="/tmp"))
    path.chmod(0o777)
    assert all(parent.stat().st_mode & 0o001 for parent in path.parents), "a parent is not searchable by all"
    yield path
    shutil.rmtree(path)


def _image() -> Image.Image:
    image = Image.new("RGB", (64, 48))
    image.putdata([(x * 4, y * 5, (x + y) % 256) for y in range(48) for x in range(64)])
    return image


def _assert_pool_healthy(drop: Path | None = None) -> None:
    result = sandbox.run_code("result_image = ImageOps.invert(image)", _image(), timeout=5)
    assert result.ok, result.error
    assert result.image is not None
    assert pixel_sha256(result.image) == pixel_sha256(ImageOps.invert(_image()))
    if drop is not None:
        assert list(drop.iterdir()) == []


def _blocked(code: str, *, timeout: float = 5.0) -> sandbox.SandboxResult:
    result = sandbox.run_code(code, _image(), timeout=timeout)
    assert not result.ok, f"not blocked; printed: {result.stdout!r}"
    assert result.error
    return result


def test_reading_etc_passwd_is_denied() -> None:
    result = _blocked("print(open('/etc/passwd').read())")
    assert "PermissionError" in result.error and "/etc/passwd" in result.error
    assert "root:" not in result.stdout
    _assert_pool_healthy()


@pytest.mark.parametrize("write", [
    "open({path!r}, 'w').write('pwned')",
    "image.save({path!r})",
    "np.save({path!r}, np.zeros(3))",
], ids=["open", "Image.save", "np.save"])
def test_writing_a_file_is_denied(write: str, drop_dir: Path) -> None:
    target = drop_dir / "out.png"
    result = _blocked(write.format(path=str(target)) + "\nresult_image = image")
    assert "PermissionError" in result.error
    _assert_pool_healthy(drop_dir)


_RAW_SOCKET = """
import ctypes, os, struct
libc = ctypes.CDLL(None, use_errno=True)
def check(rc, what):
    if rc < 0:
        err = ctypes.get_errno()
        raise PermissionError(err, f"{{what}}: {{os.strerror(err)}}")
    return rc
addr = struct.pack("=H", 2) + struct.pack("!H", {port}) + bytes([127, 0, 0, 1]) + bytes(8)
fd = check(libc.socket(2, {kind}, 0), "socket")
{send}
result_image = image
"""
_TCP_SEND = 'check(libc.connect(fd, addr, 16), "connect"); check(libc.send(fd, b"pwned", 5, 0), "send")'
_UDP_SEND = 'check(libc.sendto(fd, b"pwned", 5, 0, addr, 16), "sendto")'


def test_tcp_to_a_listener_on_localhost_is_blocked() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        result = _blocked(_RAW_SOCKET.format(port=port, kind=1, send=_TCP_SEND))
        assert "Operation not permitted" in result.error
        result = _blocked(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)")
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody knocked
    _assert_pool_healthy()


def test_udp_to_a_listener_on_localhost_is_blocked() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.setblocking(False)
        port = listener.getsockname()[1]
        result = _blocked(_RAW_SOCKET.format(port=port, kind=2, send=_UDP_SEND))
        assert "Operation not permitted" in result.error
        with pytest.raises(BlockingIOError):
            listener.recvfrom(100)  # nothing arrived
    _assert_pool_healthy()


def test_os_system_runs_nothing(drop_dir: Path) -> None:
    # libc's system() reports a failed spawn as shell status 127, not as an exception
    result = sandbox.run_code(f"import os\nprint(os.system('echo pwned > {drop_dir}/x'))\nresult_image = image",
                              _image())
    assert result.stdout.strip() == str(127 << 8)
    _assert_pool_healthy(drop_dir)


def test_subprocess_is_denied(drop_dir: Path) -> None:
    result = _blocked(f"import subprocess\nsubprocess.run(['/bin/sh', '-c', 'echo pwned > {drop_dir}/x'])")
    assert "PermissionError" in result.error and "Operation not permitted" in result.error
    _assert_pool_healthy(drop_dir)


def test_os_fork_is_denied(drop_dir: Path) -> None:
    result = _blocked(f"import os\nif os.fork() == 0:\n    open('{drop_dir}/x', 'w')\n    os._exit(0)")
    assert "PermissionError" in result.error
    _assert_pool_healthy(drop_dir)


def test_ctypes_calls_cannot_spawn_or_fork(drop_dir: Path) -> None:
    code = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"print(libc.system(b'echo pwned > {drop_dir}/x'), libc.fork(), libc.execv(b'/bin/sh', None))\n"
        "result_image = image"
    )
    result = sandbox.run_code(code, _image())
    assert result.ok and result.stdout.split() == [str(127 << 8), "-1", "-1"]  # system, fork, execve
    _assert_pool_healthy(drop_dir)


def test_subclasses_walk_to_os_system_runs_nothing(drop_dir: Path) -> None:
    code = (
        "system = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
        ".__init__.__globals__['system']\n"
        f"print(system('echo pwned > {drop_dir}/x'))\nresult_image = image"
    )
    result = sandbox.run_code(code, _image())
    assert result.stdout.strip() == str(127 << 8)
    _assert_pool_healthy(drop_dir)


def test_the_parent_environment_is_invisible() -> None:
    result = sandbox.run_code("import os\nprint(dict(os.environ))\nresult_image = image", _image())
    assert result.ok and FAKE_KEY not in result.stdout and "OPENAI_API_KEY" not in result.stdout
    result = _blocked(f"print(open('/proc/{os.getpid()}/environ').read())")
    assert "PermissionError" in result.error and FAKE_KEY not in result.stdout + result.error
    _assert_pool_healthy()


def test_killing_the_zygote_or_geodistil_is_denied() -> None:
    pool = sandbox._state.pool
    assert pool is not None
    zygotes = set(pool.zygote_pids())
    result = _blocked("import os\nos.kill(os.getppid(), 9)")
    assert "PermissionError" in result.error
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    try:
        result = _blocked(f"import os, signal\nos.kill({os.getpid()}, signal.SIGUSR1)")
        assert "PermissionError" in result.error
        time.sleep(0.05)
        assert received == []
    finally:
        signal.signal(signal.SIGUSR1, previous)
    _assert_pool_healthy()
    assert set(pool.zygote_pids()) == zygotes  # the same zygotes, all alive
    for pid in zygotes:
        os.kill(pid, 0)


def test_an_endless_loop_times_out() -> None:
    start = time.monotonic()
    result = _blocked("while True:\n    pass", timeout=2.0)
    assert "TimeoutError" in result.error and "2 s" in result.error
    assert time.monotonic() - start < 4.0
    _assert_pool_healthy()


def test_a_memory_bomb_hits_the_memory_limit() -> None:
    # np.zeros reserves without touching pages: the address-space limit, not page faults, ends it
    result = _blocked("chunks = []\nwhile True:\n    chunks.append(np.zeros(64 * 1024 * 1024, dtype=np.uint8))")
    assert "MemoryError" in result.error and "MiB" in result.error
    _assert_pool_healthy()


def test_a_100000_by_100000_image_is_refused() -> None:
    result = _blocked("result_image = Image.new('RGB', (100000, 100000))")
    assert "MemoryError" in result.error
    _assert_pool_healthy()


def test_an_oversized_result_image_is_refused() -> None:
    result = _blocked("result_image = Image.new('L', (10000, 3000))")
    assert "more than" in result.error and "pixels" in result.error
    _assert_pool_healthy()


def test_a_forged_result_on_the_pipe_is_rejected() -> None:
    # a well-formed header announcing a 2x2 RGB image, followed by 5 bytes instead of 12
    code = (
        "import os, struct\n"
        "forged = struct.pack('<4sB3xI8sIIIIQ', b'GDC1', 0, 511, b'RGB', 2, 2, 0, 0, 5) + bytes(5)\n"
        "for fd in range(64):\n"
        "    try:\n        os.write(fd, forged)\n"
        "    except OSError:\n        pass\n"
        "os._exit(0)"
    )
    result = _blocked(code)
    assert "malformed" in result.error
    _assert_pool_healthy()


def test_a_zygote_killed_from_outside_is_replaced_quietly() -> None:
    pool = sandbox._state.pool
    assert pool is not None
    victim = pool.zygote_pids()[0]
    os.kill(victim, signal.SIGKILL)  # as the OOM killer would
    time.sleep(0.05)
    for _ in range(pool.size):  # every zygote serves once, the dead one replaced on its turn
        _assert_pool_healthy()
    assert victim not in pool.zygote_pids()


# --- kernel objects that outlive a process: System V IPC and POSIX message queues ---

IPC_KEY = 0x67640000 + (os.getpid() & 0xFFF) * 8  # this run's own keys, never another's objects
IPC_KEYS = range(IPC_KEY, IPC_KEY + 5)
MQ_NAME = f"/geodistil-escape-{os.getpid()}"
_IPC_CREAT, _IPC_RMID = 0o1000, 0
_libc = ctypes.CDLL(None, use_errno=True)
_libc.shmat.restype = ctypes.c_void_p


def _sysv_objects() -> dict[str, list[int]]:
    """The ids of this run's System V objects on the host, by kind (from /proc/sysvipc)."""
    found: dict[str, list[int]] = {}
    for kind in ("shm", "msg", "sem"):
        rows = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]
        found[kind] = [int(row.split()[1]) for row in rows if int(row.split()[0]) in IPC_KEYS]
    return found


def _remove_sysv(kind: str, ident: int) -> None:
    if kind == "sem":
        _libc.semctl(ident, 0, _IPC_RMID)
    else:
        (_libc.shmctl if kind == "shm" else _libc.msgctl)(ident, _IPC_RMID, None)


@pytest.fixture
def no_ipc_left_behind() -> Iterator[None]:
    """Whatever an attempt manages to create is removed here, and the test fails if there was any."""
    yield
    left = {kind: ids for kind, ids in _sysv_objects().items() if ids}
    for kind, ids in left.items():
        for ident in ids:
            _remove_sysv(kind, ident)
    mq_left = _libc.mq_unlink(MQ_NAME.encode()) == 0
    assert not left and not mq_left, f"IPC objects outlived the job: {left}, POSIX queue {mq_left}"


# a job that calls libc directly, as hostile code would to skip Python's own checks
_LIBC_JOB = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
def check(rc, what):
    if rc is None or rc == -1 or rc == ctypes.c_void_p(-1).value:
        err = ctypes.get_errno()
        raise PermissionError(err, f"{{what}}: {{os.strerror(err)}}")
    return rc
{body}
result_image = image
"""
_LEAVE_MARKER = """
for extra in range(5):  # as in the report: 1.25 GiB no memory limit counts once the job is gone
    check(libc.shmget({key} + extra, 256 << 20, 0o1666), "shmget")
shmid = check(libc.shmget({key}, 0, 0), "shmget")
ctypes.memmove(check(libc.shmat(shmid, None, 0), "shmat"), b"left-by-job-1", 13)
"""
_READ_MARKER = """
shmid = check(libc.shmget({key}, 0, 0), "shmget")
print(ctypes.string_at(check(libc.shmat(shmid, None, 0o10000), "shmat"), 13))
"""


def _libc_job(body: str, **values: str) -> str:
    """The job running ``body``, with ``{key}`` (this run's IPC key) and ``values`` filled in."""
    return _LIBC_JOB.format(body=body.format(key=IPC_KEY, **values))


def test_a_job_cannot_create_shared_memory_that_outlives_it(no_ipc_left_behind: None) -> None:
    result = _blocked(_libc_job(_LEAVE_MARKER))
    assert "PermissionError" in result.error and "shmget" in result.error
    assert _sysv_objects()["shm"] == []
    _assert_pool_healthy()


def test_a_marker_in_shared_memory_is_not_seen_by_the_next_job(no_ipc_left_behind: None) -> None:
    sandbox.run_code(_libc_job(_LEAVE_MARKER), _image())
    result = _blocked(_libc_job(_READ_MARKER))
    assert "left-by-job-1" not in result.stdout
    _assert_pool_healthy()


def test_a_host_shared_memory_segment_cannot_be_attached(no_ipc_left_behind: None) -> None:
    shmid = _libc.shmget(IPC_KEY, 4096, _IPC_CREAT | 0o666)  # readable by anyone: only the sandbox stops it
    assert shmid >= 0, os.strerror(ctypes.get_errno())
    address = _libc.shmat(shmid, None, 0)
    ctypes.memmove(address, b"host-secret!!", 13)
    _libc.shmdt(ctypes.c_void_p(address))
    try:
        result = _blocked(_libc_job(f'print(ctypes.string_at(check(libc.shmat({shmid}, None, 0o10000), "shmat"), 13))'))
        assert "PermissionError" in result.error and "host-secret" not in result.stdout
    finally:
        _libc.shmctl(shmid, _IPC_RMID, None)
    _assert_pool_healthy()


@pytest.mark.parametrize("body", [
    'qid = check(libc.msgget({key}, 0o1666), "msgget")\n'
    'check(libc.msgsnd(qid, b"\\x01\\0\\0\\0\\0\\0\\0\\0left-by-job-1", 13, 0), "msgsnd")',
    f'check(libc.mq_open({MQ_NAME.encode()!r}, os.O_CREAT | os.O_WRONLY, 0o666, None), "mq_open")',
], ids=["system-v", "posix"])
def test_a_job_cannot_create_a_message_queue(body: str, no_ipc_left_behind: None) -> None:
    result = _blocked(_libc_job(body))
    assert "PermissionError" in result.error and "Operation not permitted" in result.error
    _assert_pool_healthy()


def test_a_job_cannot_create_a_semaphore_set(no_ipc_left_behind: None) -> None:
    result = _blocked(_libc_job('check(libc.semget({key}, 1, 0o1666), "semget")'))
    assert "PermissionError" in result.error and "semget" in result.error
    _assert_pool_healthy()


def test_posix_shared_memory_in_dev_shm_is_denied() -> None:
    name = f"geodistil-escape-{os.getpid()}"
    result = _blocked(_libc_job(f'check(libc.shm_open(b"/{name}", os.O_CREAT | os.O_RDWR, 0o666), "shm_open")'))
    assert "PermissionError" in result.error and "shm_open" in result.error
    assert not Path("/dev/shm", name).exists()
    _assert_pool_healthy()


# --- what Landlock leaves open: path lookups, metadata, watches, the mount table ---

_PATH_PROBES = """
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
AT_FDCWD = -100
def raw(rc):
    if rc < 0:
        raise OSError(ctypes.get_errno(), "")
buffer = ctypes.create_string_buffer(512)
probes = {{
    "stat": lambda p: os.stat(p), "lstat": lambda p: os.lstat(p), "access": lambda p: os.access(p, os.F_OK),
    "readlink": lambda p: os.readlink(p), "open": lambda p: os.open(p, os.O_RDONLY),
    "open_O_PATH": lambda p: os.open(p, os.O_PATH), "listdir": lambda p: os.listdir(p),
    "statvfs": lambda p: os.statvfs(p), "listxattr": lambda p: os.listxattr(p), "chdir": lambda p: os.chdir(p),
    "statx": lambda p: raw(libc.statx(AT_FDCWD, p.encode(), 0, 0xfff, buffer)),
    "listxattrat": lambda p: raw(libc.syscall(465, AT_FDCWD, p.encode(), 0, buffer, 512)),
    "file_getattr": lambda p: raw(libc.syscall(468, AT_FDCWD, p.encode(), buffer, 24, 0)),
}}
def outcome(probe, path):
    try:
        answer = probe(path)
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return str(answer) if isinstance(answer, bool) else "found"
for name, probe in probes.items():
    print(name, outcome(probe, {there!r}), outcome(probe, {missing!r}))
result_image = image
"""


def test_a_job_cannot_tell_which_host_paths_exist(drop_dir: Path) -> None:
    code = _PATH_PROBES.format(there=str(drop_dir), missing=str(drop_dir / "missing"))
    result = sandbox.run_code(code, _image())
    assert result.ok, result.error
    outcomes = {name: (there, missing) for name, there, missing in map(str.split, result.stdout.splitlines())}
    answers = {name: there for name, (there, missing) in outcomes.items() if there != missing}
    assert answers == {}, f"these calls tell an existing path from a missing one: {answers}"
    assert {there for there, _ in outcomes.values()} <= {"EPERM", "False"}
    _assert_pool_healthy()


@pytest.mark.parametrize("watch", [
    'fd = check(libc.inotify_init1(0), "inotify_init1")\n'
    'check(libc.inotify_add_watch(fd, {path}, 0xfff), "inotify_add_watch")',
    'fd = check(libc.fanotify_init(0x200, 0), "fanotify_init")  # FAN_REPORT_FID: allowed unprivileged\n'
    'check(libc.fanotify_mark(fd, 1, 0x3b, -100, {path}), "fanotify_mark")',
], ids=["inotify", "fanotify"])
def test_watching_a_host_folder_is_denied(watch: str, drop_dir: Path) -> None:
    result = _blocked(_libc_job(watch, path=repr(str(drop_dir).encode())))
    assert "PermissionError" in result.error and "Operation not permitted" in result.error
    _assert_pool_healthy()


def test_the_host_mount_table_cannot_be_listed() -> None:
    code = ("ids = (ctypes.c_uint64 * 64)()\n"
            "request = (ctypes.c_uint64 * 3)(24, 2**64 - 1, 0)  # size, LSMT_ROOT, no parameter\n"
            'print(check(libc.syscall(458, request, ids, 64, 0), "listmount"), list(ids))')
    result = _blocked(_libc_job(code))
    assert "PermissionError" in result.error and "listmount" in result.error
    _assert_pool_healthy()


@pytest.mark.parametrize("call", [
    'check(libc.setxattr({path}, b"user.pwned", b"1", 1, 0), "setxattr")',
    'value = ctypes.create_string_buffer(b"1")\n'
    "args = (ctypes.c_uint64 * 2)(ctypes.addressof(value), 1)  # value pointer; size 1, flags 0\n"
    'check(libc.syscall(463, -100, {path}, 0, b"user.pwned", args, 16), "setxattrat")',
], ids=["setxattr", "setxattrat"])
def test_setting_an_extended_attribute_on_a_host_file_is_denied(call: str, drop_dir: Path) -> None:
    target = drop_dir / "file"
    target.write_bytes(b"")
    target.chmod(0o666)  # writable by anyone: only the sandbox stops it
    result = _blocked(_libc_job(call, path=repr(str(target).encode())))
    assert "PermissionError" in result.error and "Operation not permitted" in result.error
    assert os.listxattr(target) == []
    _assert_pool_healthy()
