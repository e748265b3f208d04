"""Image preprocessing, hashing and encoding for the teacher."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import os
from typing import Any

from PIL import Image

# vision encoders work in 28-pixel patches (Qwen2-VL family); sizes stay multiples of it
PATCH = 28
EXIF_ORIENTATION = 0x0112


def fit_to_max_pixels(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """The size an image is sent at: aspect kept, at most ``max_pixels`` pixels."""
    w, h = size
    if w * h <= max_pixels:
        return w, h
    scale = math.sqrt(max_pixels / (w * h))
    return max(1, int(w * scale)), max(1, int(h * scale))


def preprocess(image: Image.Image, max_pixels: int) -> Image.Image:
    """The image as the teacher sees it: RGB, capped at ``max_pixels``. Deterministic."""
    image = image.convert("RGB") if image.mode != "RGB" else image
    size = fit_to_max_pixels(image.size, max_pixels)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image


def pixel_sha256(image: Image.Image) -> str:
    """Hash of mode, size and raw pixels: equal hashes mean identical images."""
    h = hashlib.sha256()
    h.update(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def image_data_url(image: Image.Image, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """The image as a data URL in ASCII bytes, as request bodies splice it in (see ``data_url``);
    ``.decode()`` gives the string."""
    if fmt == "jpeg":
        return data_url(encode(image.convert("RGB"), "JPEG", quality=quality), "image/jpeg")
    return data_url(encode(image, "PNG"), "image/png")


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    """The image as a ``fmt`` file, without holding the GIL while it encodes, where Linux allows.

    Pillow encodes into a ``BytesIO`` with the GIL held, but into a real file with the GIL
    released; an anonymous in-memory file (``memfd``) lets the event loop and other threads
    run meanwhile. The bytes are the same either way.
    """
    if not hasattr(os, "memfd_create"):
        buf = io.BytesIO()
        image.save(buf, format=fmt, **options)
        return buf.getvalue()
    with open(os.memfd_create("geodistil-image"), "w+b", buffering=0) as file:
        image.save(file, format=fmt, **options)
        file.seek(0)
        return file.read()


def sendable_source(image: Image.Image, sent: Image.Image, source: bytes | None, fmt: str) -> bytes | None:
    """The dataset file's own bytes, when sending them shows the teacher exactly ``sent``.

    That is a JPEG sent at its stored size and mode, with no EXIF rotation for a viewer to
    apply: re-encoding it would cost CPU and add a second round of compression for nothing.
    """
    if source is None or sent is not image or fmt != "jpeg" or image.format != "JPEG":
        return None
    return source if image.getexif().get(EXIF_ORIENTATION, 1) == 1 else None


def data_url(data: bytes, mime: str = "image/jpeg") -> bytes:
    """A base64 data URL as ASCII bytes: nothing in it needs escaping in JSON."""
    return b"data:" + mime.encode() + b";base64," + base64.b64encode(data)


def from_data_url(url: str) -> Image.Image:
    _, _, payload = url.partition(",")
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    image.load()
    return image
