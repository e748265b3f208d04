"""``image_zoom_in_tool``: crop a box of the image the teacher was sent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from geodistil.config import BoxConvention, ToolsConfig
from geodistil.tools.base import ToolError, ToolOutput

MIN_SIDE = 28
MAX_ASPECT = 100


@dataclass(frozen=True)
class ZoomInTool:
    box_convention: BoxConvention = BoxConvention.ABSOLUTE
    name: str = "image_zoom_in_tool"

    @classmethod
    def from_config(cls, config: ToolsConfig) -> ZoomInTool:
        return cls(box_convention=config.box_convention)

    def __post_init__(self) -> None:  # built back from a trace's settings, the convention is a string
        object.__setattr__(self, "box_convention", BoxConvention(self.box_convention))

    def settings(self) -> dict[str, Any]:
        return {"box_convention": self.box_convention.value}

    @property
    def description(self) -> str:
        space = {
            BoxConvention.ABSOLUTE: "absolute pixel coordinates of the image",
            BoxConvention.REL_1000: "coordinates relative to the image, from 0 to 1000",
            BoxConvention.REL_1: "coordinates relative to the image, from 0 to 1",
        }[self.box_convention]
        return (
            "Zoom in on a region of an image by cropping it with a bounding box "
            f"[x1, y1, x2, y2] in {space}. Use it to read signs, text or small details."
        )

    @property
    def parameters(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "bbox_2d": {
                    "type": "array",
                    "items": {"type": "number"},
                    "minItems": 4,
                    "maxItems": 4,
                    "description": "[x1, y1, x2, y2], top-left and bottom-right corners",
                },
                "label": {"type": "string", "description": "what the region shows"},
                "image_index": {
                    "type": "integer",
                    "description": "image to crop: 0 is the original, k the k-th tool output",
                },
            },
            "required": ["bbox_2d"],
        }

    def resolve_box(self, bbox: Any, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """The pixel box a ``bbox_2d`` means on an image of ``size``, clamped to it."""
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise ToolError(f"bbox_2d must be a list of 4 numbers [x1, y1, x2, y2], got {bbox!r}")
        try:
            x1, y1, x2, y2 = (float(v) for v in bbox)
        except (TypeError, ValueError) as exc:
            raise ToolError(f"bbox_2d must hold numbers, got {bbox!r}") from exc
        w, h = size
        if self.box_convention is BoxConvention.REL_1000:
            x1, x2, y1, y2 = x1 * w / 1000, x2 * w / 1000, y1 * h / 1000, y2 * h / 1000
        elif self.box_convention is BoxConvention.REL_1:
            x1, x2, y1, y2 = x1 * w, x2 * w, y1 * h, y2 * h
        left, right = sorted((x1, x2))
        top, bottom = sorted((y1, y2))
        left, right = max(0, round(left)), min(w, round(right))
        top, bottom = max(0, round(top)), min(h, round(bottom))
        bw, bh = right - left, bottom - top
        if bw <= 0 or bh <= 0:
            raise ToolError(f"bbox_2d {list(bbox)} is empty inside the {w}x{h} image")
        if bw < MIN_SIDE or bh < MIN_SIDE:
            raise ToolError(f"bbox_2d {list(bbox)} is {bw}x{bh} px; each side must be at least {MIN_SIDE} px")
        if max(bw, bh) / min(bw, bh) > MAX_ASPECT:
            raise ToolError(f"bbox_2d {list(bbox)} has an aspect ratio over {MAX_ASPECT}")
        return left, top, right, bottom

    def apply(self, image: Image.Image, arguments: dict[str, Any]) -> ToolOutput:
        box = self.resolve_box(arguments.get("bbox_2d"), image.size)
        return ToolOutput(image=image.crop(box), resolved={"box_px": list(box)})
