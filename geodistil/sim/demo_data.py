"""The synthetic demo dataset: drawn road scenes of real places, with clues of varied specificity.

Why it exists: the README demo, the tests and the load benchmarks need a dataset with ground
truth that works offline and looks like the real thing to the pipeline (1024x768 JPEG images
in a ``save_to_disk`` folder). Each row is a real city from the gazetteer; the photo is taken
a few km from it, on a road whose sign names the city and the distance. The ``clues`` text
names the city, or only the country or language, or only a continent and climate, so the
simulated teacher's errors range from a few km to thousands and difficulty varies.

Row ``i`` depends only on ``(seed, i)``, so a larger ``n`` extends a smaller one, and the
dataset fingerprint is a hash of the content: the same seed gives the same fingerprint.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from geodistil import geo
from geodistil.sim.scene import RGB, SceneSpec, ascii_text, render

IMAGE_SIZE = (1024, 768)
DEMO_VERSION = "1"  # part of the fingerprint: bump when rows change for the same seed
CLUE_LEVELS = ("city", "country", "region")
_LEVEL_WEIGHTS = (0.4, 0.35, 0.25)
_FLAGS: dict[str, tuple[RGB, RGB, RGB]] = {
    "FR": ((0, 85, 164), (255, 255, 255), (239, 65, 53)), "IT": ((0, 146, 70), (255, 255, 255), (206, 43, 55)),
    "DE": ((0, 0, 0), (221, 0, 0), (255, 206, 0)), "BE": ((0, 0, 0), (253, 218, 36), (239, 51, 64)),
    "IE": ((22, 155, 98), (255, 255, 255), (255, 136, 62)), "MX": ((0, 104, 71), (255, 255, 255), (206, 17, 38)),
    "NG": ((0, 135, 81), (255, 255, 255), (0, 135, 81)), "RU": ((255, 255, 255), (0, 57, 166), (213, 43, 30)),
    "NL": ((174, 28, 40), (255, 255, 255), (33, 70, 139)), "IN": ((255, 153, 51), (255, 255, 255), (19, 136, 8)),
    "CO": ((252, 209, 22), (0, 56, 147), (206, 17, 38)), "RO": ((0, 43, 127), (252, 209, 22), (206, 17, 38)),
}
_LANGUAGE_NAMES = {code: name for name, code in geo.LANGUAGES.items()}


@dataclass(frozen=True)
class DemoRow:
    image_jpeg: bytes
    latitude: float
    longitude: float
    clues: str
    city: str
    country: str
    clue_level: str


@lru_cache(maxsize=1)
def _candidates() -> tuple[tuple[geo.Place, ...], np.ndarray]:
    """Cities a sign can name (ASCII for the built-in font, not an English word), and their weights."""
    g = geo.gazetteer()
    places = tuple(p for p in g.cities if p.population >= 100_000 and p.name.isascii()
                   and geo.fold(p.name) not in geo.COMMON_WORDS and p.country_code in g.country_places)
    weights = np.sqrt(np.array([p.population for p in places], dtype=np.float64))
    return places, weights / weights.sum()


def _flag(code: str) -> tuple[RGB, RGB, RGB]:
    if code in _FLAGS:
        return _FLAGS[code]
    digest = hashlib.sha256(code.encode()).digest()  # a stable made-up flag for the rest
    return tuple(tuple(int(b) for b in digest[3 * k:3 * k + 3]) for k in range(3))  # type: ignore[return-value]


def _clues(rng: np.random.Generator, level: str, city: geo.Place, distance_km: int, lat: float) -> str:
    climate = geo.climate_of(lat)
    language = _LANGUAGE_NAMES.get(geo.gazetteer().countries[city.country_code].language)
    if level == "city":
        options = [f"A road sign reads '{city.name} {distance_km} km'.",
                   f"A blue sign points to {city.name}, {distance_km} km ahead.",
                   f"The signpost shows {city.name} ({distance_km} km); the landscape looks {climate}."]
    elif level == "country":
        options = [f"Licence plates and flags suggest {city.country_name}.",
                   f"A banner says 'Welcome to {city.country_name}'; the climate looks {climate}."]
        if language:
            options.append(f"The text on shop signs is in {language}; the landscape looks {climate}.")
    else:
        hemisphere = "northern" if lat >= 0 else "southern"
        options = [f"A {climate} landscape somewhere in {city.continent_name}.",
                   f"Vehicles and vegetation suggest {city.continent_name}; the climate looks {climate}.",
                   f"A {climate} landscape in the {hemisphere} hemisphere."]
    return options[int(rng.integers(len(options)))]


def _scene(rng: np.random.Generator, city: geo.Place, distance_km: int, lat: float) -> SceneSpec:
    small = rng.random() < 0.3
    tilted = rng.random() < 0.25
    return SceneSpec(
        size=IMAGE_SIZE,
        climate=geo.climate_of(lat),
        horizon=float(rng.uniform(0.42, 0.6)),
        sign_lines=(ascii_text(city.name), f"{distance_km} km"),
        sign_x=float(rng.choice([rng.uniform(0.12, 0.3), rng.uniform(0.7, 0.88)])),
        sign_font_px=int(rng.integers(11, 17) if small else rng.integers(26, 46)),
        sign_tilt_deg=float(rng.choice([-1, 1]) * rng.uniform(10, 35)) if tilted else 0.0,
        sign_colour=((0, 90, 50), (20, 60, 160), (30, 30, 30))[int(rng.integers(3))],
        centre_line=(235, 190, 30) if city.continent in ("NA", "SA") else (240, 240, 240),
        flag=_flag(city.country_code) if rng.random() < 0.5 else None,
        banner=ascii_text(f"Welcome to {city.country_name}") if rng.random() < 0.4 else None,
        mountains=bool(rng.random() < 0.35),
        noise_seed=int(rng.integers(2**31)),
        turned=bool(rng.random() < 0.05),
    )


def demo_row(index: int, seed: int = 0) -> DemoRow:
    """Row ``index`` of the demo dataset for ``seed`` (independent of how many rows are made)."""
    rng = np.random.default_rng([seed, index])
    places, weights = _candidates()
    city = places[int(rng.choice(len(places), p=weights))]
    distance_km = int(rng.integers(2, 41))
    lat, lon = geo.destination(city.lat, city.lon, distance_km, float(rng.uniform(0, 360)))
    level = CLUE_LEVELS[int(rng.choice(len(CLUE_LEVELS), p=_LEVEL_WEIGHTS))]
    clues = _clues(rng, level, city, distance_km, lat)
    buf = io.BytesIO()
    render(_scene(rng, city, distance_km, lat)).save(buf, format="JPEG", quality=90)
    return DemoRow(buf.getvalue(), round(lat, 6), round(lon, 6), clues, city.name, city.country_name, level)


def make_demo_dataset(out_dir: str, n: int, seed: int = 0) -> str:
    """Write ``n`` demo rows as a ``save_to_disk`` dataset at ``out_dir``; returns ``out_dir``.

    Columns: ``image`` (JPEG), ``latitude``, ``longitude``, ``clues`` (shown to the teacher),
    and ``city``, ``country``, ``clue_level`` for humans (never shown to the teacher).
    """
    import datasets

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rows = [demo_row(i, seed) for i in range(n)]
    features = datasets.Features({
        "image": datasets.Image(), "latitude": datasets.Value("float64"),
        "longitude": datasets.Value("float64"), "clues": datasets.Value("string"),
        "city": datasets.Value("string"), "country": datasets.Value("string"),
        "clue_level": datasets.Value("string"),
    })
    digest = hashlib.sha256(f"geodistil-demo:{DEMO_VERSION}:{json.dumps(features.to_dict(), sort_keys=True)}".encode())
    columns: dict[str, list[object]] = {name: [] for name in features}
    for row in rows:
        digest.update(hashlib.sha256(row.image_jpeg).digest())
        digest.update(json.dumps([row.latitude, row.longitude, row.clues, row.city, row.country,
                                  row.clue_level]).encode())
        columns["image"].append({"bytes": row.image_jpeg, "path": None})
        for name in ("latitude", "longitude", "clues", "city", "country", "clue_level"):
            columns[name].append(getattr(row, name))
    built = datasets.Dataset.from_dict(columns, features=features)
    # from_dict draws a random fingerprint; a content hash makes the same seed give the same one
    dataset = datasets.Dataset(built.data, info=built.info, fingerprint=digest.hexdigest()[:16])
    dataset.save_to_disk(out_dir)
    return out_dir
