"""From clue text to a guessed location, the way a VLM reasons: as specific as the clues allow.

A named city gives a guess a few km off; a country (or a language) a populous place in that
country; a continent, climate or hemisphere a populous place that fits them; nothing at all
a populous place anywhere. The ground truth is never seen. Reading a clue text is cached
(the same clues arrive on every turn); each guess is one draw from a prepared table.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from geodistil import geo

_DISTANCE = re.compile(r"(\d+(?:\.\d+)?)\s*km\b")
_HEMISPHERE = re.compile(r"\b(northern|southern)\s+hemisphere\b", re.IGNORECASE)


@dataclass(frozen=True)
class Reading:
    """What the clues say, resolved against the gazetteer."""

    city: geo.Place | None
    country: str | None  # country code
    language: str | None
    continent: str | None  # continent code
    climate: str | None
    hemisphere: str | None  # "northern" | "southern"
    distance_km: float | None


@dataclass(frozen=True)
class Guess:
    lat: float
    lon: float
    reasoning: str
    place: str  # what the guess is "near", for answers without a box


@lru_cache(maxsize=4096)
def read_clues(clues: str | None) -> Reading:
    text = clues or ""
    places = geo.places_in_text(text)
    city = next((p for p in places if p.kind == "city"), None)
    country = next((p.country_code for p in places if p.kind == "country"), None)
    continent = next((p.continent for p in places if p.kind == "continent"), None)
    lowered = text.lower()
    language = next((name for name in geo.LANGUAGES if re.search(rf"\b{name}\b", text)), None)
    climate = next((name for name in geo.CLIMATES if re.search(rf"\b{name}\b", lowered)), None)
    hemisphere = _HEMISPHERE.search(text)
    distance = _DISTANCE.search(text) if city else None
    return Reading(city, country, language, continent, climate,
                   hemisphere.group(1).lower() if hemisphere else None,
                   float(distance.group(1)) if distance else None)


@lru_cache(maxsize=512)
def _pool(country: str | None, continent: str | None, climate: str | None,
          hemisphere: str | None) -> tuple[np.ndarray, np.ndarray]:
    """City indexes that fit the constraints, with cumulative weights (loosened if none fit)."""
    g = geo.gazetteer()
    mask = np.ones(len(g.cities), dtype=bool)
    if country:
        mask &= g.country_codes == country
    elif continent:
        mask &= np.array([p.continent == continent for p in g.cities])
    band = np.ones(len(g.cities), dtype=bool)
    if climate:
        lo, hi = geo.CLIMATES[climate]
        band = (np.abs(g.lat) >= lo - 3) & (np.abs(g.lat) <= hi + 3)
    side = np.ones(len(g.cities), dtype=bool)
    if hemisphere:
        side = (g.lat >= 0) if hemisphere == "northern" else (g.lat < 0)
    # the climate is the vaguest reading, so it is the first constraint given up
    chosen = next((m for m in (mask & band & side, mask & side, mask) if m.any()), np.ones_like(mask))
    idx = np.flatnonzero(chosen)
    # a country guess leans to its big cities; a vaguer guess to populous places anywhere in the region
    weights = g.population[idx] if country else np.sqrt(g.population[idx])
    return idx, np.cumsum(weights)


def _draw(rng: random.Random, pool: tuple[np.ndarray, np.ndarray]) -> geo.Place:
    idx, cumulative = pool
    at = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1])), len(idx) - 1)
    return geo.gazetteer().cities[int(idx[at])]


def _jitter(rng: random.Random, lat: float, lon: float, sigma_km: float) -> tuple[float, float]:
    return geo.destination(lat, lon, abs(rng.gauss(0.0, sigma_km)), rng.uniform(0.0, 360.0))


def guess(clues: str | None, rng: random.Random) -> Guess:
    """A guess for ``clues`` and the reasoning that leads to it; deterministic given ``rng``."""
    r = read_clues(clues)
    if r.city is not None:
        lat, lon = _jitter(rng, r.city.lat, r.city.lon, 4.0)
        away = f" The sign gives {r.distance_km:g} km to it, so the photo is on a road close by." if r.distance_km else ""
        why = f"The clues name {r.city.name}, a city in {r.city.country_name}.{away}"
        return Guess(lat, lon, why + f" I place the photo near {r.city.name}.", r.city.name)
    country = r.country
    why = ""
    if country is None and r.language:
        speakers = geo.countries_speaking(r.language)
        if speakers:
            weights = [max(c.population, 1) for c in speakers]
            country = rng.choices([c.code for c in speakers], weights=weights)[0]
            name = geo.gazetteer().countries[country].name
            why = f"The text is in {r.language}, which points to {name} among the {r.language}-speaking countries."
    if country is not None:
        city = _draw(rng, _pool(country, None, r.climate, None))
        lat, lon = _jitter(rng, city.lat, city.lon, 30.0)
        why = why or f"The clues point to {city.country_name}."
        return Guess(lat, lon, f"{why} Without a readable place name I guess a populous area around {city.name}.",
                     f"{city.name}, {city.country_name}")
    city = _draw(rng, _pool(None, r.continent, r.climate, r.hemisphere))
    lat, lon = _jitter(rng, city.lat, city.lon, 150.0)
    hints = [h for h in (r.climate and f"a {r.climate} climate", r.continent and geo.CONTINENTS[r.continent],
                         r.hemisphere and f"the {r.hemisphere} hemisphere") if h]
    why = f"The clues only suggest {' and '.join(hints)}." if hints else "There is little to go on."
    return Guess(lat, lon, f"{why} A plausible region is around {city.country_name}; I pick a point there.",
                 city.country_name)
