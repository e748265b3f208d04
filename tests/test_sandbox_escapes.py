"""The escape suite: code a hostile teacher might write, each attempt blocked with a clear error.

After every attempt the host is unchanged (nothing written, nothing received, no process
killed) and the same pool still runs a normal job. The pool is started after a fake API key
is put in this process's environment, so the test can prove the children never see it.
"""

from __future__ import annotations

import os
import signal
import socket
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
def drop_dir(tmp_path: Path) -> Path:
    """A directory anyone may write to, so only the sandbox can stop a write landing here."""
    path = tmp_path / "drop"
    path.mkdir()
    path.chmod(0o777)
    return path


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
