import io
import json

import datasets
import pytest
from PIL import Image

from geodistil.data import DatasetSpec, GeoDataset
from geodistil.errors import ConfigError, SampleError, TraceError
from geodistil.store import TraceStore, parse_trace_name, trace_name
from geodistil.trace import SCHEMA_VERSION, Trace


def png_bytes(color=(200, 30, 30), size=(64, 48)):
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def small_dataset(tmp_path):
    rows = {
        "image": [{"bytes": png_bytes(), "path": None}, {"bytes": b"not an image", "path": None},
                  {"bytes": png_bytes(), "path": None}, {"bytes": png_bytes(), "path": None}],
        "lat": [48.85, 10.0, None, 95.0],
        "lng": [2.35, 20.0, 30.0, 40.0],
        "clues": ["a sign", "b", "c", "d"],
    }
    features = datasets.Features({"image": datasets.Image(), "lat": datasets.Value("float64"),
                                  "lng": datasets.Value("float64"), "clues": datasets.Value("string")})
    path = tmp_path / "ds"
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(path))
    return str(path)


def test_columns_are_auto_detected(small_dataset):
    ds = GeoDataset(DatasetSpec(path=small_dataset))
    assert (ds.image_column, ds.lat_column, ds.lon_column, ds.clues_column) == ("image", "lat", "lng", "clues")
    sample = ds.sample(0)
    assert (sample.lat, sample.lon, sample.clues, sample.image.size) == (48.85, 2.35, "a sign", (64, 48))


@pytest.mark.parametrize("index, problem", [(1, "image cannot be decoded"), (2, "latitude is missing"),
                                            (3, "out of range"), (9, "index out of range")])
def test_bad_rows_raise_errors_naming_the_sample(small_dataset, index, problem):
    ds = GeoDataset(DatasetSpec(path=small_dataset))
    with pytest.raises(SampleError, match=rf"sample {index}: .*{problem}"):
        ds.sample(index)


def test_unknown_column_mapping_is_a_config_error(small_dataset):
    with pytest.raises(ConfigError, match="not in the dataset"):
        GeoDataset(DatasetSpec(path=small_dataset, lat_column="latitude_deg"))


def test_fingerprint_changes_with_the_data(tmp_path, small_dataset):
    a = GeoDataset(DatasetSpec(path=small_dataset)).fingerprint
    other = tmp_path / "other"
    datasets.Dataset.from_dict({"image": [png_bytes((0, 0, 0))], "lat": [1.0], "lon": [2.0]}).save_to_disk(str(other))
    assert GeoDataset(DatasetSpec(path=str(other))).fingerprint != a
    assert GeoDataset(DatasetSpec(path=small_dataset)).fingerprint == a


def test_trace_names_sort_in_sample_order():
    assert trace_name(7) == "trace_00007.json"
    assert trace_name(7, 2, rollouts_per_sample=4) == "trace_00007_r02.json"
    assert parse_trace_name("trace_00007_r02.json") == (7, 2)
    assert parse_trace_name("summary.json") is None


def make_trace(i, r=0):
    return Trace(dataset_path="d", dataset_fingerprint="f", sample_index=i, rollout_index=r)


def test_store_writes_atomically_and_reads_back_in_order(tmp_path):
    store = TraceStore(str(tmp_path / "out"))
    for i in (3, 1, 2):
        store.write_trace(make_trace(i))
    assert store.trace_names() == ["trace_00001.json", "trace_00002.json", "trace_00003.json"]
    assert not [p for p in (tmp_path / "out").iterdir() if ".tmp-" in p.name]
    assert [t.sample_index for _, t in store.iter_traces()] == [1, 2, 3]


def test_store_reports_torn_and_foreign_traces_by_name(tmp_path):
    store = TraceStore(str(tmp_path))
    store.write_trace(make_trace(0))
    (tmp_path / "trace_00001.json").write_text('{"schema_version": 1, "sample_in')
    (tmp_path / "trace_00002.json").write_text(json.dumps({**json.loads(make_trace(2).to_json()),
                                                          "schema_version": SCHEMA_VERSION + 1}))
    items = dict(store.iter_traces())
    assert isinstance(items["trace_00000.json"], Trace)
    assert isinstance(items["trace_00001.json"], TraceError) and "trace_00001.json" in str(items["trace_00001.json"])
    assert "schema_version" in str(items["trace_00002.json"])
