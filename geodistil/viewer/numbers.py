"""Numbers JSON has no word for: NaN and the infinities, which a trace file can still hold.

Python's json module reads and writes the bare tokens ``NaN``, ``Infinity`` and
``-Infinity``, so a trace edited by hand or written by another tool may carry them (the
trace model reads them as floats). Strict JSON has no such tokens and Starlette's JSON
response refuses them, so the API spells a non-finite number as the string ``"NaN"``,
``"Infinity"`` or ``"-Infinity"`` (the words JavaScript's ``Number()`` reads back), and the
pages show the same words where Python's formatting would print ``nan`` or ``inf``.
"""

from __future__ import annotations

import math
from typing import Any


def is_finite(value: object) -> bool:
    """False only for a float that is NaN or infinite (what a page cannot draw or place)."""
    return not isinstance(value, float) or math.isfinite(value)


def _word(value: float) -> str:
    return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"


def number_text(value: float | int, spec: str = "g") -> str:
    """A number as a page shows it: formatted by ``spec`` when finite, its word when not."""
    return format(value, spec) if is_finite(value) else _word(value)


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float, however deep, replaced by its word."""
    if isinstance(value, float) and not math.isfinite(value):
        return _word(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value
