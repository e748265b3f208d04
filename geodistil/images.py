"""Image preprocessing, hashing and encoding for the teacher."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import os
from typing import Any

from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile

# vision encoders work in 28-pixel patches (Qwen2-VL family); sizes stay multiples of it
PATCH = 28
EXIF_ORIENTATION = 0x0112
DECODE_SCALES = (8, 4, 2)  # the DCT scalings libjpeg decodes at, largest first


def fit_to_max_pixels(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """The size an image is sent at: aspect kept, at most ``max_pixels`` pixels."""
    w, h = size
    if w * h <= max_pixels:
        return w, h
    scale = math.sqrt(max_pixels / (w * h))
    return max(1, int(w * scale)), max(1, int(h * scale))


def decode_scale(size: tuple[int, int], max_pixels: int) -> int:
    """The factor a stored image can be decoded smaller by and still be resized *down* to what is
    sent: the largest of 8, 4 and 2 that leaves it at least the sent size each way, else 1.

    Those are the scales a JPEG decodes at directly (DCT scaling), so a 13000x13000 photo sent
    at 886x886 is decoded at 1625x1625 and never exists at full size in memory.
    """
    target = fit_to_max_pixels(size, max_pixels)
    if target == size:
        return 1
    return next((s for s in DECODE_SCALES if size[0] // s >= target[0] and size[1] // s >= target[1]), 1)


def scaled_size(size: tuple[int, int], scale: int) -> tuple[int, int]:
    """The size an image of ``size`` has at 1/``scale`` (rounded up, as libjpeg and ``reduce`` do)."""
    return -(-size[0] // scale), -(-size[1] // scale)


def _is_jpeg(image: Image.Image) -> bool:
    """A JPEG, or a JPEG-based file such as a phone's MPO: one that decodes at a reduced scale."""
    return isinstance(image, JpegImageFile)


def is_complete_jpeg(image: Image.Image, data: bytes) -> bool:
    """A just-opened JPEG whose file ends with the end-of-image marker (padding aside): not cut
    short, the commonest way a stored JPEG breaks. Its header is read; its pixels are not."""
    return _is_jpeg(image) and data[-64:].rstrip(b"\0")[-2:] == b"\xff\xd9"


def decoding_size(image: Image.Image, scale: int) -> tuple[int, int]:
    """The largest size decoding an opened image at ``scale`` holds in memory: the scaled size
    for a JPEG, the full size for any other (``reduce`` comes after a full decode)."""
    return scaled_size(image.size, scale) if _is_jpeg(image) else image.size


def decode(image: Image.Image, scale: int) -> Image.Image:
    """Decode a just-opened image at 1/``scale`` of its size: a JPEG by DCT scaling (``draft``),
    any other fully and then by ``reduce`` (after conversion to RGB, the mode it is sent in,
    since ``reduce`` refuses palette and bilevel images). Scale 1 is a plain full decode.
    """
    if scale == 1:
        image.load()
        return image
    expected = scaled_size(image.size, scale)
    if _is_jpeg(image):
        image.draft(image.mode, (image.size[0] // scale, image.size[1] // scale))
        if image.size != expected:
            raise ValueError(f"the JPEG does not decode at 1/{scale} (got {image.size[0]}x{image.size[1]})")
        image.load()
        return image
    image.load()
    return (image.convert("RGB") if image.mode != "RGB" else image).reduce(scale)


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


def sendable_source(image: Image.Image, sent: Image.Image, source: bytes | None, fmt: str,
                    stored_size: tuple[int, int]) -> bytes | None:
    """The dataset file's own bytes, when sending them shows the teacher exactly ``sent``.

    That is a JPEG decoded and sent at its stored size and mode, with no EXIF rotation for a
    viewer to apply: re-encoding it would cost CPU and add a second round of compression for
    nothing. One decoded at a reduced scale is not: the file would show more pixels than ``sent``.
    """
    if (source is None or sent is not image or image.size != stored_size or fmt != "jpeg"
            or image.format != "JPEG"):
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
