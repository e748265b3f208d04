"""The live objects a process shares between sample tasks: its teacher clients.

Tasks take references (settings, the *name* of a secret); the live objects behind them are
built here once and reused, so every sample of a run shares one connection pool per process.
A client belongs to the event loop it was made on: sample tasks run on the flow's own event
loop, and the flow closes that loop's clients after each chunk (``close_shared_contexts``).

The teacher's API key comes from the Prefect ``Secret`` block that ``TeacherConfig.api_key_secret``
names (else from the environment, see ``TeacherConfig.api_key``). It is resolved when a client
is built and handed straight to it: never a parameter, a result, a log line or a trace field.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prefect.blocks.system import Secret

from geodistil.config import RolloutSettings, TeacherConfig
from geodistil.rollout import RolloutContext

_contexts: dict[tuple[str, int], RolloutContext] = {}

# Per-run constants, computed once per run rather than once per task: every job of a chunk holds
# the same settings, dataset and storage objects. Keyed by their identities, the objects kept
# alive beside the value so that an identity is never taken for another object's.
_held: dict[tuple[object, ...], tuple[tuple[object, ...], str]] = {}


def once_per_run(what: str, objects: tuple[object, ...], compute: Callable[[], str]) -> str:
    """``compute()``, once for these very objects (``what`` names the value)."""
    key = (what, *map(id, objects))
    held = _held.get(key)
    if held is None or any(a is not b for a, b in zip(held[0], objects)):
        if len(_held) > 64:  # a long-lived worker process serves many runs
            _held.clear()
        held = _held[key] = (objects, compute())
    return held[1]


async def teacher_api_key(teacher: TeacherConfig) -> str | None:
    """The key from the Secret block the config names; None means: use the environment variable."""
    if not teacher.api_key_secret:
        return None
    secret = await Secret.aload(teacher.api_key_secret)
    return str(secret.get())


async def shared_context(settings: RolloutSettings) -> RolloutContext:
    """The rollout context (teacher client, tools) for these settings on the running loop."""
    key = (once_per_run("settings-json", (settings,), settings.model_dump_json), id(asyncio.get_running_loop()))
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
