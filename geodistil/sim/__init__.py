"""The simulated teacher and the synthetic demo dataset: test and demo fixtures, not a model."""

from __future__ import annotations

from geodistil.sim.config import SimConfig
from geodistil.sim.demo_data import make_demo_dataset
from geodistil.sim.server import SimServer, create_app, serve

__all__ = ["SimConfig", "SimServer", "create_app", "make_demo_dataset", "serve"]
