"""Opening a geolocation dataset and reading its samples.

A dataset is a Hugging Face ``datasets`` dataset: a ``save_to_disk`` folder (local or any
fsspec URL) or a hub id + split. Columns are mapped to image / latitude / longitude / clues,
auto-detected when not given. A dataset that cannot be opened, or has no rows, raises
``ConfigError`` saying so in one line. A row that cannot be used raises ``SampleError``
naming its index; it never stops the other samples.

An image is decoded no larger than it needs to be (``Decoding``): a photo far larger than
what is sent decodes at a reduced scale, and one that would still decode to more than a cap
of pixels is that sample's error, so memory per sample stays bounded whatever the dataset holds.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import fsspec
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from geodistil.errors import ConfigError, GeodistilError, SampleError
from geodistil.images import decode, decode_scale, decoding_size, is_complete_jpeg

IMAGE_CANDIDATES = ("image", "img", "photo", "picture")
LAT_CANDIDATES = ("latitude", "lat")
LON_CANDIDATES = ("longitude", "lon", "lng", "long")
CLUES_CANDIDATES = ("clues", "clue", "text", "hints", "caption")
HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")  # "name" or "owner/name": tried on the hub when no such folder exists
OPEN_HINT = "give a datasets save_to_disk folder (local or s3://...) or a Hugging Face hub id"


class DatasetSpec(BaseModel):
    """Where a dataset is and how its columns map; a small, hashable reference."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="save_to_disk folder (local or s3://...) or a hub dataset id")
    split: str | None = Field(None, description="split to use; default 'train' or the only one")
    image_column: str | None = None
    lat_column: str | None = None
    lon_column: str | None = None
    clues_column: str | None = None
    storage_options: dict[str, Any] | None = Field(None, description="fsspec options for remote folders")


@dataclass(frozen=True)
class Decoding:
    """How ``GeoDataset.sample`` decodes a row's image.

    ``scale`` repeats a recorded decode scale (replay); otherwise ``fit``, the pixels the image
    is sent at, lets a large image decode at the scale ``images.decode_scale`` allows. Beyond
    ``max_pixels`` decoded pixels the sample is an error. The default is a full decode, uncapped.

    ``lazy``: a complete JPEG file read at full scale is left undecoded (Pillow decodes it when its
    pixels are first read, e.g. by a tool): a rollout that sends the file as it is never needs them.
    A file cut short (no end-of-image marker) is decoded at once, so that it is this sample's error.
    """

    fit: int | None = None
    scale: int | None = None
    max_pixels: int | None = None
    lazy: bool = False


@dataclass
class Sample:
    index: int
    image: Image.Image
    original_size: tuple[int, int]  # the stored image's; ``image`` is smaller when decoded at a reduced scale
    lat: float
    lon: float
    clues: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    encoded: bytes | None = None  # the image file as stored, when the row holds one
    decode_scale: int = 1  # ``image`` is the stored image decoded at 1/decode_scale (see ``images.decode``)


def _pick(columns: list[str], given: str | None, candidates: tuple[str, ...], what: str,
          required: bool = True) -> str | None:
    if given is not None:
        if given not in columns:
            raise ConfigError(f"{what} column {given!r} is not in the dataset (columns: {columns})")
        return given
    lowered = {c.lower(): c for c in columns}
    for name in candidates:
        if name in lowered:
            return lowered[name]
    if required:
        raise ConfigError(f"no {what} column found among {columns}; name it in the dataset spec")
    return None


def _is_saved_dataset(fs: Any, root: str) -> bool:
    return any(fs.exists(f"{root}/{marker}") for marker in ("dataset_info.json", "state.json", "dataset_dict.json"))


def _empty_parts(fs: Any, root: str) -> list[str]:
    """The parts of a saved dataset without a data file ('' for a plain dataset, else split
    names): ``load_from_disk`` fails on them with an ``IndexError`` that says nothing useful."""
    def empty(folder: str) -> bool:
        try:
            return not json.loads(fs.cat_file(f"{folder}/state.json")).get("_data_files", [None])
        except (OSError, ValueError, AttributeError):
            return False  # not a part we can judge: load_from_disk says what is wrong

    if fs.exists(f"{root}/dataset_dict.json"):
        splits = json.loads(fs.cat_file(f"{root}/dataset_dict.json")).get("splits", [])
        return [split for split in splits if empty(f"{root}/{split}")]
    return [""] if empty(root) else []


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"


def _load(spec: DatasetSpec) -> Any:
    """The ``datasets`` object a spec names; ``ConfigError``, in one line, when there is none."""
    import datasets

    problem = "cannot be opened"
    try:
        fs, root = fsspec.core.url_to_fs(spec.path, **(spec.storage_options or {}))
        root = root.rstrip("/")
        if _is_saved_dataset(fs, root):
            empty = _empty_parts(fs, root)
            if empty:
                where = "" if empty == [""] else f" in split{'s' * (len(empty) > 1)} {', '.join(empty)}"
                raise ConfigError(f"dataset {spec.path} has no rows{where}: point it at a dataset with samples")
            return datasets.load_from_disk(spec.path, storage_options=spec.storage_options)
        if not fs.exists(root):
            if not HUB_ID.fullmatch(spec.path):
                raise ConfigError(f"dataset {spec.path} does not exist: {OPEN_HINT}")
            problem = "is no folder here and cannot be loaded from the hub"
        # a folder of data files, or a hub id: needs network, kept real for users who have it
        return datasets.load_dataset(spec.path, split=spec.split or "train")
    except GeodistilError:
        raise
    except Exception as exc:  # datasets and fsspec raise many kinds; the user needs one line
        raise ConfigError(f"dataset {spec.path} {problem} ({_first_line(exc)}): {OPEN_HINT}") from exc


class GeoDataset:
    """An opened dataset with its column mapping and fingerprint."""

    def __init__(self, spec: DatasetSpec) -> None:
        import datasets

        self.spec = spec
        loaded = _load(spec)
        if isinstance(loaded, datasets.DatasetDict):
            split = spec.split or ("train" if "train" in loaded else None)
            if split is None and len(loaded) == 1:
                split = next(iter(loaded))
            if split not in loaded:
                raise ConfigError(f"split {spec.split!r} not in {list(loaded)}")
            loaded = loaded[split]
            self.split: str | None = split
        else:
            self.split = spec.split
        if len(loaded) == 0:
            split = f" (split {self.split})" if self.split else ""
            raise ConfigError(f"dataset {spec.path}{split} has no rows: point it at a dataset with samples")
        columns = list(loaded.column_names)
        self.image_column = _pick(columns, spec.image_column, IMAGE_CANDIDATES, "image")
        self.lat_column = _pick(columns, spec.lat_column, LAT_CANDIDATES, "latitude")
        self.lon_column = _pick(columns, spec.lon_column, LON_CANDIDATES, "longitude")
        self.clues_column = _pick(columns, spec.clues_column, CLUES_CANDIDATES, "clues", required=False)
        if isinstance(loaded.features.get(self.image_column), datasets.Image):
            # decode ourselves, so one broken image is one sample's error, not an exception deep in datasets
            loaded = loaded.cast_column(self.image_column, datasets.Image(decode=False))
        self._ds = loaded
        self._lock = threading.Lock()  # Arrow reads are not guaranteed thread-safe
        self.fingerprint = self._fingerprint()

    def __len__(self) -> int:
        return len(self._ds)

    @property
    def path(self) -> str:
        return self.spec.path

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(str(getattr(self._ds, "_fingerprint", "")).encode())
        h.update(f"{len(self._ds)}:{self._ds.column_names}:{self.split}".encode())
        return h.hexdigest()[:16]

    def row(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self._ds):
            raise SampleError(index, f"index out of range (dataset has {len(self._ds)} rows)")
        with self._lock:
            return self._ds[index]

    def sample(self, index: int, decoding: Decoding = Decoding()) -> Sample:
        """The sample at ``index``, its image decoded per ``decoding``; ``SampleError`` names the
        index and the problem."""
        row = self.row(index)
        image, size, scale, encoded = _decode_image(index, row.get(self.image_column), decoding)
        lat = _coordinate(index, row.get(self.lat_column), "latitude", 90.0)
        lon = _coordinate(index, row.get(self.lon_column), "longitude", 180.0)
        clues = row.get(self.clues_column) if self.clues_column else None
        used = {self.image_column, self.lat_column, self.lon_column, self.clues_column}
        meta = {k: v for k, v in row.items() if k not in used and isinstance(v, (str, int, float, bool))}
        return Sample(index=index, image=image, original_size=size, lat=lat, lon=lon,
                      clues=str(clues) if clues is not None else None, meta=meta, encoded=encoded, decode_scale=scale)


def _decode_image(index: int, value: Any, decoding: Decoding
                  ) -> tuple[Image.Image, tuple[int, int], int, bytes | None]:
    """The decoded image, its stored size, the scale it was decoded at, and the file's bytes
    when the row holds a file rather than pixels."""
    if value is None:
        raise SampleError(index, "image is missing")
    try:
        if isinstance(value, Image.Image):  # decoded already: nothing to scale, nothing to save
            _check_pixels(index, value.size, value.size, decoding.max_pixels)
            return value, value.size, 1, None
        if isinstance(value, dict) and value.get("bytes"):
            data = bytes(value["bytes"])
        elif isinstance(value, dict) and value.get("path"):
            with fsspec.open(value["path"], "rb") as f:
                data = f.read()
        elif isinstance(value, (bytes, bytearray)):
            data = bytes(value)
        elif isinstance(value, str):
            with fsspec.open(value, "rb") as f:
                data = f.read()
        else:
            raise SampleError(index, f"image has an unsupported type {type(value).__name__}")
        image = Image.open(io.BytesIO(data))  # reads the header only: the size, before any pixel
        size = image.size
        scale = decoding.scale or (decode_scale(size, decoding.fit) if decoding.fit else 1)
        _check_pixels(index, size, decoding_size(image, scale), decoding.max_pixels)
        if not (decoding.lazy and scale == 1 and is_complete_jpeg(image, data)):
            image = decode(image, scale)
    except SampleError:
        raise
    except Exception as exc:  # PIL raises many kinds for a broken file
        raise undecodable(index, exc) from exc
    return image, size, scale, data


def undecodable(index: int, exc: Exception) -> SampleError:
    """The one line for a sample whose image Pillow cannot decode."""
    return SampleError(index, f"image cannot be decoded ({type(exc).__name__}: {exc})")


def _check_pixels(index: int, size: tuple[int, int], decoding: tuple[int, int], max_pixels: int | None) -> None:
    """``SampleError`` when decoding an image of ``size`` would hold more than ``max_pixels`` pixels."""
    w, h = decoding
    if max_pixels is not None and w * h > max_pixels:
        raise SampleError(index, f"image {size[0]}x{size[1]} would decode to {w}x{h}, {w * h / 1e6:.1f} megapixels, "
                                 f"above the cap of {max_pixels / 1e6:.1f} (image.max_decoded_pixels): "
                                 "downscale it in the dataset or raise the cap")


def _coordinate(index: int, value: Any, what: str, limit: float) -> float:
    if value is None:
        raise SampleError(index, f"{what} is missing")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise SampleError(index, f"{what} {value!r} is not a number") from exc
    if not math.isfinite(number) or not -limit <= number <= limit:
        raise SampleError(index, f"{what} {value!r} is out of range [-{limit:g}, {limit:g}]")
    return number


_OPENED: dict[str, GeoDataset] = {}
_OPEN_LOCK = threading.Lock()


def open_dataset(spec: DatasetSpec | str) -> GeoDataset:
    """Open (once per process) the dataset a spec, or a bare path, names."""
    if isinstance(spec, str):
        spec = DatasetSpec(path=spec)
    key = spec.model_dump_json()
    with _OPEN_LOCK:
        if key not in _OPENED:
            _OPENED[key] = GeoDataset(spec)
        return _OPENED[key]
