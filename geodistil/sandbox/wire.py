"""PIL images as the raw bytes that cross the sandbox boundary, and back."""

from __future__ import annotations

from collections.abc import Iterator

from PIL import Image

from geodistil.sandbox.protocol import MODE_BYTES

STRIP_BYTES = 256 * 1024


def to_wire_image(image: Image.Image) -> Image.Image:
    """The same picture in a mode whose raw bytes rebuild it exactly (see ``MODE_BYTES``).

    A palette or an odd layout would not survive ``tobytes``, so those are converted here,
    deterministically, on both sides of the boundary.
    """
    mode = image.mode
    if mode in MODE_BYTES:
        return image
    if mode.startswith("I;16"):
        return image.convert("I")
    if mode in ("PA", "La", "RGBa") or (mode == "P" and image.has_transparency_data):
        return image.convert("RGBA")
    return image.convert("RGB")


def raw_strips(image: Image.Image) -> Iterator[bytes]:
    """``image.tobytes()`` in horizontal strips of about 256 KiB.

    Small strips reuse the same memory; one ``tobytes`` of a large image would need fresh pages,
    and a freshly forked child pays a page fault for every one of them.
    """
    rows = max(1, STRIP_BYTES // (image.width * 4))
    for top in range(0, image.height, rows):
        yield image.crop((0, top, image.width, min(top + rows, image.height))).tobytes()


def copy_pixels(image: Image.Image, window: memoryview) -> int:
    """Write ``image.tobytes()`` into ``window``, strip by strip; returns the bytes written."""
    offset = 0
    for strip in raw_strips(image):
        window[offset:offset + len(strip)] = strip
        offset += len(strip)
    return offset
