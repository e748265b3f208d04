"""geodistil: distil think-with-images geolocation traces from a teacher VLM.

The public API is re-exported here and loaded lazily: ``import geodistil`` stays cheap, which
matters for the sandbox's worker processes and the CLI's start-up.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DatasetSpec": "geodistil.data",
    "GeoDataset": "geodistil.data",
    "Sample": "geodistil.data",
    "open_dataset": "geodistil.data",
    "BoxConvention": "geodistil.config",
    "GenerationConfig": "geodistil.config",
    "ImageConfig": "geodistil.config",
    "RolloutSettings": "geodistil.config",
    "TeacherConfig": "geodistil.config",
    "ToolsConfig": "geodistil.config",
    "Trace": "geodistil.trace",
    "TraceRecord": "geodistil.trace",
    "TraceStore": "geodistil.store",
    "RolloutContext": "geodistil.rollout",
    "rollout": "geodistil.rollout",
    "SampleRange": "geodistil.store",
    "StorageSpec": "geodistil.store",
    "generate": "geodistil.generate",
    "verify_trace": "geodistil.replay",
    "rebuild_images": "geodistil.replay",
    "parse_answer": "geodistil.scoring",
    "haversine_km": "geodistil.scoring",
    "reward": "geodistil.scoring",
    "summarize": "geodistil.stats",
    "GeodistilError": "geodistil.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'geodistil' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
