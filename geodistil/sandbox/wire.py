"""PIL images as the raw bytes that cross the sandbox boundary, and back."""

from __future__ import annotations

from PIL import Image

from geodistil.sandbox.protocol import MODE_BYTES


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
