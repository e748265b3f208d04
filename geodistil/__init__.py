"""geodistil: distil think-with-images geolocation traces from a teacher VLM.

The public API is re-exported here and loaded lazily: ``import geodistil`` stays cheap, which
matters for the sandbox's worker processes and the CLI's start-up.

No exported name is the name of a submodule: once ``geodistil.generate`` has been imported,
Python binds the package attribute ``generate`` to that module, whatever this file says. So the
driver function ``geodistil.generate.generate`` is exported as ``generate_traces`` and
``geodistil.rollout.rollout`` as ``run_rollout``; ``geodistil.generate`` and ``geodistil.rollout``
are always the modules. An entry ``"module:attribute"`` exports an object under another name.
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
    "run_rollout": "geodistil.rollout:rollout",
    "SampleRange": "geodistil.store",
    "StorageSpec": "geodistil.store",
    "generate_traces": "geodistil.generate:generate",
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
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'geodistil' has no attribute {name!r}")
    module, _, attribute = target.partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
