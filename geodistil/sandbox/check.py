"""``SandboxReport``: each isolation layer and whether it is active on this machine.

The child layers are not guessed from kernel versions: a probe job forks a real child,
which applies every layer and reports what took effect, then runs no code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from PIL import Image

from geodistil.sandbox.protocol import CHILD_LAYERS, JOB_PROBE, STATUS_PROBE, Job, decode_result

PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Layer:
    name: str
    active: bool
    detail: str


@dataclass(frozen=True)
class SandboxReport:
    layers: list[Layer]
    allow_weak: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every layer active: code runs with full isolation."""
        return all(layer.active for layer in self.layers)

    @property
    def missing(self) -> list[str]:
        return [layer.name for layer in self.layers if not layer.active]

    @property
    def usable(self) -> bool:
        """Whether run_code will run code: all layers, or the user accepted fewer."""
        return self.ok or self.allow_weak

    def __str__(self) -> str:
        width = max(len(layer.name) for layer in self.layers)
        lines = [f"{'on ' if layer.active else 'OFF'} {layer.name:<{width}}  {layer.detail}" for layer in self.layers]
        if self.ok:
            lines.append("sandbox: every layer active")
        elif self.allow_weak:
            lines.append(f"sandbox: WEAK isolation accepted (GEODISTIL_SANDBOX_ALLOW_WEAK); missing {self.missing}")
        else:
            lines.append(f"sandbox: code will NOT run; missing {self.missing}")
        return "\n".join(lines + self.notes)


def probe_job(job_id: int, memory_bytes: int) -> tuple[Job, Image.Image]:
    """A job that applies the layers and reports them: no code, a one-pixel image."""
    return Job(job_id, PROBE_TIMEOUT_S, memory_bytes, JOB_PROBE, b"", "L", 1, 1), Image.new("L", (1, 1))


def parse_probe(payload: bytes | bytearray, window: memoryview) -> list[Layer]:
    """The child's own account of its layers; anything unexpected counts as not active."""
    result = decode_result(payload, window)
    reported: dict[str, Layer] = {}
    if result.status == STATUS_PROBE:
        for item in json.loads(result.stdout):
            name = str(item.get("name"))
            reported[name] = Layer(name, bool(item.get("active")), str(item.get("detail", "")))
    return [reported.get(name, Layer(name, False, "not reported by the probe")) for name in CHILD_LAYERS]


def parent_layers(timeout_s: float) -> tuple[list[Layer], list[Layer]]:
    """The layers the parent and zygote provide, before and after the child's."""
    before = [Layer("clean_process", True,
                    "zygotes started by subprocess (never a fork of geodistil), empty environment, own session")]
    after = [
        Layer("wall_clock_deadline", True, f"the zygote kills the child at the timeout (default {timeout_s:g} s)"),
        Layer("result_validation", True,
              "header + raw pixels; mode allow-list, size limits, exact byte length; nothing unpickled"),
    ]
    return before, after
