"""geodistil: distil think-with-images geolocation traces from a teacher VLM."""

from __future__ import annotations

__version__ = "0.1.0"
