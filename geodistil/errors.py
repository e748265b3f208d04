"""Exceptions raised by geodistil.

Hierarchy::

    GeodistilError
    ├── ConfigError          a setting is missing or inconsistent
    ├── SampleError          one dataset row cannot be used (names the index)
    ├── ToolError            a tool call is invalid or failed (the teacher sees the message)
    ├── TeacherError         the teacher API failed after every retry
    ├── SandboxError         the code sandbox is unavailable or misbehaved
    ├── TraceError           a stored trace is unreadable or of another schema
    └── ReplayError          replay could not rebuild an image, or its hash differs

Third-party exceptions are translated at the boundary (``raise X(...) from exc``).
"""

from __future__ import annotations


class GeodistilError(Exception):
    """Base class of every error geodistil raises on purpose."""


class ConfigError(GeodistilError):
    pass


class SampleError(GeodistilError):
    def __init__(self, index: int, problem: str) -> None:
        super().__init__(f"sample {index}: {problem}")
        self.index = index
        self.problem = problem


class ToolError(GeodistilError):
    pass


class TeacherError(GeodistilError):
    def __init__(self, message: str, kind: str = "teacher_error") -> None:
        super().__init__(message)
        self.kind = kind


class SandboxError(GeodistilError):
    pass


class TraceError(GeodistilError):
    pass


class ReplayError(GeodistilError):
    pass
