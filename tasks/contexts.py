"""The live objects a process shares between sample tasks: teacher clients, and the loop they live on.

Tasks take references (settings, the *name* of a secret); the live objects behind them are
built here once and reused, so every sample of a run shares one connection pool per process.
A client belongs to the event loop it was made on, which gives two cases:

- The local runner runs sample tasks on the flow's own event loop; the flow closes that loop's
  clients after each chunk (``close_shared_contexts``).
- prefect-dask runs every async task under its own ``asyncio.run``, so a client made there
  would be bound to a loop that is gone by the next task. Sample tasks on a Dask worker are
  therefore sync tasks that run their coroutine on one long-lived loop per worker process
  (``run_on_worker_loop``); its clients are closed when the process exits.

The teacher's API key comes from the Prefect ``Secret`` block that ``TeacherConfig.api_key_secret``
names (else from the environment, see ``TeacherConfig.api_key``). It is resolved when a client
is built and handed straight to it: never a parameter, a result, a log line or a trace field.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from prefect.blocks.system import Secret

from geodistil.config import RolloutSettings, TeacherConfig
from geodistil.rollout import RolloutContext

T = TypeVar("T")

_contexts: dict[tuple[str, int], RolloutContext] = {}
_worker_loop: asyncio.AbstractEventLoop | None = None
_worker_loop_lock = threading.Lock()


async def teacher_api_key(teacher: TeacherConfig) -> str | None:
    """The key from the Secret block the config names; None means: use the environment variable."""
    if not teacher.api_key_secret:
        return None
    secret = await Secret.aload(teacher.api_key_secret)
    return str(secret.get())


async def shared_context(settings: RolloutSettings) -> RolloutContext:
    """The rollout context (teacher client, tools) for these settings on the running loop."""
    key = (settings.model_dump_json(), id(asyncio.get_running_loop()))
    if key not in _contexts:
        api_key = await teacher_api_key(settings.teacher)
        if key not in _contexts:  # another task of this loop may have built it while we waited
            _contexts[key] = RolloutContext.create(settings, api_key=api_key)
    return _contexts[key]


async def close_shared_contexts() -> None:
    """Close the clients made on the running loop."""
    loop = id(asyncio.get_running_loop())
    for key in [k for k in _contexts if k[1] == loop]:
        await _contexts.pop(key).close()


def worker_loop() -> asyncio.AbstractEventLoop:
    """This process's long-lived event loop, on a daemon thread (started on first use)."""
    global _worker_loop
    with _worker_loop_lock:
        if _worker_loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="geodistil-worker-loop", daemon=True).start()
            atexit.register(_close_worker_loop, loop)
            _worker_loop = loop
        return _worker_loop


def run_on_worker_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the worker loop and wait for it (from a thread that is not that loop).

    The coroutine runs in a copy of the caller's context (``call_soon_threadsafe`` copies it),
    so Prefect's task-run context and settings, such as the API URL, follow it.
    """
    return asyncio.run_coroutine_threadsafe(coro, worker_loop()).result()


def _close_worker_loop(loop: asyncio.AbstractEventLoop) -> None:
    try:
        asyncio.run_coroutine_threadsafe(close_shared_contexts(), loop).result(timeout=10)
    except Exception:  # exiting anyway: the sockets close with the process
        pass
    loop.call_soon_threadsafe(loop.stop)
