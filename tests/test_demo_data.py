"""The synthetic demo dataset: real places, drawn images, clues of varied specificity, deterministic."""

from __future__ import annotations

import io
from pathlib import Path

import datasets
import pytest
from PIL import Image

from geodistil import geo
from geodistil.data import open_dataset
from geodistil.scoring import haversine_km
from geodistil.sim.demo_data import demo_row, make_demo_dataset


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_demo_dataset(str(tmp_path_factory.mktemp("demo") / "ds"), n=20, seed=0)


def test_dataset_has_the_documented_columns(demo_dir: str) -> None:
    ds = datasets.load_from_disk(demo_dir)
    assert len(ds) == 20
    assert set(ds.column_names) == {"image", "latitude", "longitude", "clues", "city", "country", "clue_level"}
    assert isinstance(ds.features["image"], datasets.Image)


def test_images_are_photo_sized_jpegs(demo_dir: str) -> None:
    ds = datasets.load_from_disk(demo_dir).cast_column("image", datasets.Image(decode=False))
    for item in ds["image"][:5]:
        image = Image.open(io.BytesIO(item["bytes"]))
        assert image.format == "JPEG" and sorted(image.size) == [768, 1024]


def test_the_same_seed_gives_the_same_fingerprint_and_rows(tmp_path: Path, demo_dir: str) -> None:
    again = datasets.load_from_disk(make_demo_dataset(str(tmp_path / "again"), n=20, seed=0))
    first = datasets.load_from_disk(demo_dir)
    assert again._fingerprint == first._fingerprint
    assert again["clues"] == first["clues"] and again["latitude"] == first["latitude"]


def test_another_seed_gives_another_dataset(tmp_path: Path, demo_dir: str) -> None:
    other = datasets.load_from_disk(make_demo_dataset(str(tmp_path / "other"), n=20, seed=1))
    assert other._fingerprint != datasets.load_from_disk(demo_dir)._fingerprint


def test_a_row_does_not_depend_on_how_many_rows_are_made() -> None:
    assert demo_row(3, seed=5) == demo_row(3, seed=5)
    assert demo_row(3, seed=5).clues != demo_row(4, seed=5).clues


def test_each_photo_is_taken_near_its_real_city() -> None:
    for i in range(10):
        row = demo_row(i)
        city = geo.find_place(f"{row.city}, {row.country}")
        assert city is not None
        assert haversine_km(row.latitude, row.longitude, city.lat, city.lon) <= 41


def test_clues_vary_from_the_city_to_only_a_region() -> None:
    rows = [demo_row(i) for i in range(40)]
    assert {r.clue_level for r in rows} == {"city", "country", "region"}
    for row in rows:
        named = {p.kind for p in geo.places_in_text(row.clues)}
        if row.clue_level == "city":
            assert row.city in row.clues
        else:
            assert "city" not in named


def test_the_dataset_opens_as_geodistil_samples(demo_dir: str) -> None:
    sample = open_dataset(demo_dir).sample(0)
    assert sample.image.size[0] * sample.image.size[1] == 1024 * 768
    assert sample.clues
