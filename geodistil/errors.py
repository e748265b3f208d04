"""Exceptions raised by geodistil.

Hierarchy::

    GeodistilError           (an unexpected failure: ``internal_error``, worth another try)
    ├── ConfigError          a setting is missing or inconsistent
    ├── SampleError          one dataset row cannot be used (names the index)
    ├── ToolError            a tool call is invalid or failed (the teacher sees the message)
    ├── TeacherError         the teacher failed after every retry: transient (429, 5xx, timeout)
    │   ├── TeacherUnreachable   the teacher stopped answering for longer than ``max_outage_s``
    │   └── TeacherRejected      the teacher answered 4xx: the same request fails again
    │       ├── TeacherAuthError     401 / 403: the key is wrong (a re-run may have a better one)
    │       └── TeacherLimitReached  the conversation outgrew the context or the image limit
    ├── SandboxError         the code sandbox is unavailable or misbehaved
    ├── TraceError           a stored trace is unreadable or of another schema
    └── ReplayError          replay could not rebuild an image, or its hash differs

Every class says what a failed sample's trace is worth: ``family`` starts its trace's
``error_kind``, ``retryable`` says whether the client and Prefect try it again within the run,
``rerun`` whether a re-run of the same command generates it again. ``error_class`` maps a
stored ``error_kind`` back to its class, so those decisions are read from the class.

Third-party exceptions are translated at the boundary (``raise X(...) from exc``).
"""

from __future__ import annotations


class GeodistilError(Exception):
    """Base class of every error geodistil raises on purpose."""

    family = "internal_error"
    retryable = True
    rerun = True


class ConfigError(GeodistilError):
    pass


class SampleError(GeodistilError):
    family = "sample_error"
    retryable = False
    rerun = False  # a broken row stays broken

    def __init__(self, index: int, problem: str) -> None:
        super().__init__(f"sample {index}: {problem}")
        self.index = index
        self.problem = problem


class ToolError(GeodistilError):
    pass


class TeacherError(GeodistilError):
    """``kind`` details the failure (``http_503``, ``timeout``, ...); ``error_kind`` is what a trace records.
    ``requests`` and ``retries`` count what the failed call sent, for the trace's usage."""

    family = "teacher_error"

    def __init__(self, message: str, kind: str = "teacher_error") -> None:
        super().__init__(message)
        self.kind = kind
        self.requests = 0
        self.retries = 0

    @property
    def error_kind(self) -> str:
        return f"{self.family}:{self.kind}"


class TeacherUnreachable(TeacherError):
    """The teacher has not answered (refused connections, DNS, 5xx or timeouts in a row) for longer
    than ``max_outage_s``. Not retried within the run, which stops starting samples; a re-run
    generates these samples again, once the teacher is back."""

    family = "teacher_unreachable"
    retryable = False


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
    pass


class TraceError(GeodistilError):
    pass


class ReplayError(GeodistilError):
    pass


_FAMILIES: dict[str, type[GeodistilError]] = {
    cls.family: cls for cls in (GeodistilError, SampleError, TeacherError, TeacherUnreachable, TeacherRejected,
                                TeacherAuthError)
}


def error_class(error_kind: str | None) -> type[GeodistilError] | None:
    """The class behind a trace's ``error_kind`` (``teacher_error:http_503`` -> ``TeacherError``);
    None for no error or a kind this version does not know (treated as final by callers)."""
    if not error_kind:
        return None
    return _FAMILIES.get(error_kind.split(":", 1)[0])
