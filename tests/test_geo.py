"""The offline gazetteer: lookups, nearest place, country of a point, names in text."""

from __future__ import annotations

import numpy as np

from geodistil import geo
from geodistil.scoring import haversine_km


def test_find_place_returns_the_most_populous_city_of_that_name() -> None:
    place = geo.find_place("Paris")
    assert place is not None and place.country_code == "FR" and place.kind == "city"
    assert haversine_km(place.lat, place.lon, 48.8566, 2.3522) < 10


def test_find_place_with_a_country_picks_the_city_in_that_country() -> None:
    place = geo.find_place("Paris, United States")
    assert place is not None and place.country_code == "US"


def test_find_place_ignores_accents_and_case() -> None:
    place = geo.find_place("sao paulo")
    assert place is not None and place.name == "São Paulo"


def test_find_place_of_an_unknown_name_is_none() -> None:
    assert geo.find_place("Xqzzyville") is None


def test_country_of_a_capital_is_its_country() -> None:
    assert geo.country_of(48.8566, 2.3522) == "FR"
    assert geo.country_of(-33.87, 151.21) == "AU"
    assert geo.country_of(35.68, 139.69) == "JP"


def test_country_of_open_ocean_or_invalid_coordinates_is_none() -> None:
    assert geo.country_of(-45.0, -130.0) is None  # South Pacific
    assert geo.country_of(float("nan"), 0.0) is None
    assert geo.country_of(91.0, 0.0) is None


def test_countries_of_many_points_agrees_with_country_of() -> None:
    rng = np.random.default_rng(0)
    lats, lons = rng.uniform(-60, 70, 200), rng.uniform(-180, 180, 200)
    batch = geo.countries_of(lats, lons)
    assert batch == [geo.country_of(float(a), float(b)) for a, b in zip(lats, lons)]


def test_nearest_place_is_the_city_at_that_point() -> None:
    lyon = geo.find_place("Lyon")
    assert lyon is not None
    assert geo.nearest_place(lyon.lat, lyon.lon) == lyon
    near = geo.nearest_place(lyon.lat + 0.01, lyon.lon)  # 1 km north: Lyon or one of its districts
    assert near is not None and near.name.startswith("Lyon")


def test_nearest_search_agrees_with_a_brute_force_scan() -> None:
    g = geo.gazetteer()
    rng = np.random.default_rng(1)
    for lat, lon in zip(rng.uniform(-90, 90, 300), rng.uniform(-180, 180, 300)):
        _, distance = g.nearest_index(float(lat), float(lon))
        p1, p2 = np.radians(lat), np.radians(g.lat)
        a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(g.lon - lon) / 2) ** 2
        brute = 2 * 6371.0088 * np.arcsin(np.sqrt(a)).min()
        assert abs(distance - brute) < 1e-6


def test_country_centroid_lies_inside_the_country() -> None:
    for code in ("FR", "US", "BR", "JP"):
        centroid = geo.country_centroid(code)
        assert centroid is not None
        assert geo.country_of(*centroid) == code


def test_places_in_text_finds_city_country_and_continent_in_order() -> None:
    found = geo.places_in_text("A sign reads 'Lyon 12 km'. Flags of France. Somewhere in South America.")
    assert [(p.name, p.kind) for p in found] == [
        ("Lyon", "city"), ("France", "country"), ("South America", "continent")]


def test_places_in_text_needs_a_capital_letter() -> None:
    assert geo.places_in_text("a nice view along the bay") == []
    assert [p.name for p in geo.places_in_text("A view of Nice")] == ["Nice"]


def test_places_in_text_prefers_the_city_in_a_named_country() -> None:
    found = geo.places_in_text("The road to Paris, United States")
    assert found[0].name == "Paris" and found[0].country_code == "US"


def test_countries_speaking_a_language_are_most_populous_first() -> None:
    names = [c.name for c in geo.countries_speaking("Spanish")]
    assert names[0] == "Mexico" and "Spain" in names


def test_destination_moves_the_given_distance() -> None:
    lat, lon = geo.destination(45.0, 4.0, 25.0, 73.0)
    assert abs(haversine_km(45.0, 4.0, lat, lon) - 25.0) < 1e-6
