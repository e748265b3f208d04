"""Every exception geodistil raises on purpose, in one tree.

Hierarchy (``family``, the first part of a trace's ``error_kind``, in brackets)::

    GeodistilError [internal_error]  an unexpected failure, worth another try
    ├── ConfigError [config_error]   a setting is missing or inconsistent
    ├── SampleError [sample_error]   one dataset row cannot be used (names the index)
    ├── ToolError [tool_error]       a tool call is invalid or failed (the teacher sees the message)
    ├── TeacherError [teacher_error] the teacher failed after every retry: transient (429, 5xx, timeout)
    │   ├── TeacherUnreachable [teacher_unreachable]  no answer for longer than ``max_outage_s``: stops the run
    │   └── TeacherRejected [teacher_rejected]        a 4xx: the same request fails again
    │       ├── TeacherAuthError [teacher_auth]       401 / 403: the key is wrong (a re-run may have a better one)
    │       └── TeacherLimitReached [teacher_limit]   the conversation outgrew the context or the image limit
    ├── SandboxError [sandbox_error] a sandbox worker broke mid-job (it is replaced: worth another try)
    │   ├── SandboxUnavailable [sandbox_unavailable]  the sandbox cannot run here at all: stops the run
    │   └── ProtocolError [sandbox_protocol]          a frame between the pool and a worker broke the protocol
    ├── StoreError [store_error]     the trace store cannot be written (a full disk): stops the run
    │   └── StoreLockedError [store_locked]           another run holds the store's lock
    ├── TraceError [trace_error]     a stored trace is unreadable or of another schema
    ├── ReplayError [replay_error]   replay could not rebuild an image, or its hash differs
    ├── ExportSkip [export_skip]     a trace that cannot be exported (the message says why)
    ├── QueryError [query_error]     a viewer query string the list cannot answer
    ├── UntrustedResultError [untrusted_result]  a Prefect result file this code did not write
    ├── RetryableSampleError [retry_sample]      a Prefect task's sample failed transiently: retry the task
    ├── RerunSampleError [rerun_sample]          a Prefect task's sample failed for this run, not for a re-run
    └── TaskFailed [internal_error:task_failed]  a Prefect task failed without an error trace of its own
        └── ChunkFailed [internal_error:chunk_failed]  a chunk run on a worker failed every attempt

Every class says what a failure is worth, as class attributes: ``retryable`` whether the client
and Prefect try it again within the run, ``rerun`` whether a re-run of the same command generates
the sample again, ``stops_run`` whether the run stops starting samples (the failure is not the
sample's but the machine's or the teacher's). An instance may carry a ``kind`` detailing the
failure (``http_503``, ``timeout``); its ``error_kind`` (``family`` or ``family:kind``) is what a
trace records, and ``error_class`` maps a stored ``error_kind`` back to its class, so every
decision is read from the class, never from the string. Two errors that differ in any of those
decisions are two classes, so the round trip through a stored trace is exact.

Third-party exceptions are translated at the boundary (``raise X(...) from exc``).
"""

from __future__ import annotations

from typing import ClassVar

_FAMILIES: dict[str, type[GeodistilError]] = {}


class GeodistilError(Exception):
    """Base class of every error geodistil raises on purpose."""

    family: ClassVar[str] = "internal_error"
    kind: str | None = None  # the detail after the family, set per instance where it varies
    retryable: ClassVar[bool] = True
    rerun: ClassVar[bool] = True
    stops_run: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "family" in cls.__dict__:  # a class that names its own family is the one its kind maps to
            if cls.family in _FAMILIES:
                raise TypeError(f"error family {cls.family!r} is taken by {_FAMILIES[cls.family].__name__}")
            _FAMILIES[cls.family] = cls

    @property
    def error_kind(self) -> str:
        """What a trace records: ``family``, or ``family:kind`` when the instance details it."""
        return f"{self.family}:{self.kind}" if self.kind else self.family


_FAMILIES[GeodistilError.family] = GeodistilError


class ConfigError(GeodistilError):
    family = "config_error"
    retryable = False


class SampleError(GeodistilError):
    family = "sample_error"
    retryable = False
    rerun = False  # a broken row stays broken

    def __init__(self, index: int, problem: str) -> None:
        super().__init__(f"sample {index}: {problem}")
        self.index = index
        self.problem = problem


class ToolError(GeodistilError):
    """Shown to the teacher as its call's result; never ends a sample."""

    family = "tool_error"
    retryable = False


class TeacherError(GeodistilError):
    """``kind`` details the failure (``http_503``, ``timeout``, ...).
    ``requests`` and ``retries`` count what the failed call sent, for the trace's usage."""

    family = "teacher_error"

    def __init__(self, message: str, kind: str = "teacher_error") -> None:
        super().__init__(message)
        self.kind = kind
        self.requests = 0
        self.retries = 0


class TeacherUnreachable(TeacherError):
    """The teacher has not answered (refused connections, DNS, 5xx or timeouts in a row) for longer
    than ``max_outage_s``. Not retried within the run, which stops starting samples; a re-run
    generates these samples again, once the teacher is back."""

    family = "teacher_unreachable"
    retryable = False
    stops_run = True


class TeacherRejected(TeacherError):
    """A 4xx answer (bad request, model not found): sending the same request again cannot help,
    so neither the client, nor Prefect, nor a re-run of the same settings tries it again."""

    family = "teacher_rejected"
    retryable = False
    rerun = False

    def __init__(self, message: str, kind: str, status: int) -> None:
        super().__init__(message, kind)
        self.status = status


class TeacherAuthError(TeacherRejected):
    """401 / 403. Not retried within the run (every request would fail alike), but a re-run
    generates these samples again: the key is no part of the settings, and the user who saw
    this error has most likely fixed it."""

    family = "teacher_auth"
    rerun = True


class TeacherLimitReached(TeacherRejected):
    """The conversation no longer fits the teacher: ``kind`` is ``context_length`` or ``image_limit``.

    The rollout ends that conversation with this stop reason and scores it; it never
    becomes an error trace.
    """

    family = "teacher_limit"


class SandboxError(GeodistilError):
    """The code sandbox broke while running a job (a worker died or garbled its reply; it has been
    replaced). Not the model's mistake: the sample ends with this error, and another try may pass."""

    family = "sandbox_error"


class SandboxUnavailable(SandboxError):
    """The code sandbox cannot run on this machine at all (missing isolation layers, not Linux):
    no sample that calls code can pass, so the run stops; a re-run after the fix goes on."""

    family = "sandbox_unavailable"
    retryable = False
    stops_run = True


class ProtocolError(SandboxError, ValueError):
    """A frame broke the sandbox protocol: wrong magic, a length out of bounds, a torn stream."""

    family = "sandbox_protocol"


class StoreError(GeodistilError):
    """The trace store cannot be written (a full disk, a read-only folder, lost credentials): the
    run stops, since every later sample would fail alike; a re-run resumes where it stopped."""

    family = "store_error"
    retryable = False
    stops_run = True


class StoreLockedError(StoreError):
    """Another run holds the store's lock."""

    family = "store_locked"


class TraceError(GeodistilError):
    family = "trace_error"
    retryable = False


class ReplayError(GeodistilError):
    family = "replay_error"
    retryable = False


class ExportSkip(GeodistilError):
    """A trace that cannot be exported; the message says why."""

    family = "export_skip"
    retryable = False
    rerun = False


class QueryError(GeodistilError, ValueError):
    """A query string the trace list cannot answer (answered with 400)."""

    family = "query_error"
    retryable = False
    rerun = False


class UntrustedResultError(GeodistilError, ValueError):
    """A result file in the store that this code did not write: ignored (a cache miss)."""

    family = "untrusted_result"
    retryable = False


class RetryableSampleError(GeodistilError):
    """The sample's trace was written with a transient error: let Prefect retry the task.
    A rejected request (4xx) or a teacher limit is no such error: the task completes with its record."""

    family = "retry_sample"


class RerunSampleError(GeodistilError):
    """The sample's trace was written with an error no retry within this run fixes but a re-run may
    (a rejected key, a teacher unreachable past ``max_outage_s``): the task fails, so no result is
    cached for the re-run to find, and Prefect does not retry it."""

    family = "rerun_sample"
    retryable = False


class TaskFailed(GeodistilError):
    """A Prefect task failed without leaving an error trace (it crashed, or its worker died)."""

    kind = "task_failed"


class ChunkFailed(TaskFailed):
    """A chunk handed to a Prefect worker (``runner="workers"``) failed or was lost every attempt;
    its samples are unfinished, so a retry of the run generates them."""

    kind = "chunk_failed"


def error_class(error_kind: str | None) -> type[GeodistilError] | None:
    """The class behind a trace's ``error_kind`` (``teacher_error:http_503`` -> ``TeacherError``);
    None for no error or a kind this version does not know (treated as final by callers)."""
    if not error_kind:
        return None
    family, _, _ = error_kind.partition(":")
    return _FAMILIES.get(family)
