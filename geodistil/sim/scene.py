"""Drawing a synthetic road scene: sky and ground by climate, a road, a sign, a flag, a banner.

Every random choice lives in ``SceneSpec`` (made by the demo dataset from its seed), so
``render`` is a pure function and the same spec always gives the same pixels. Text is drawn
with Pillow's built-in font, never a system font, so two machines with the same Pillow draw
identical images; that font is ASCII-only, hence ``ascii_text``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]

# (sky top, sky at the horizon, ground far, ground near) per geo.CLIMATES word
PALETTES: dict[str, tuple[RGB, RGB, RGB, RGB]] = {
    "tropical": ((35, 105, 200), (165, 210, 240), (60, 140, 55), (35, 110, 35)),
    "subtropical": ((65, 135, 215), (205, 220, 235), (185, 160, 115), (160, 125, 85)),
    "temperate": ((85, 135, 195), (190, 210, 230), (105, 150, 85), (70, 125, 60)),
    "subarctic": ((115, 135, 165), (200, 205, 215), (90, 105, 80), (55, 85, 60)),
    "polar": ((145, 165, 195), (225, 230, 235), (235, 238, 242), (215, 220, 228)),
}


@dataclass(frozen=True)
class SceneSpec:
    size: tuple[int, int]
    climate: str
    horizon: float  # fraction of the height
    sign_lines: tuple[str, ...]
    sign_x: float  # fraction of the width of the sign's centre
    sign_font_px: int  # small signs are where zooming pays off
    sign_tilt_deg: float  # tilted signs are where rotating pays off
    sign_colour: RGB
    centre_line: RGB  # yellow in the Americas, white elsewhere: a real-world clue
    flag: tuple[RGB, RGB, RGB] | None
    banner: str | None
    mountains: bool
    noise_seed: int
    turned: bool = False  # the whole photo taken sideways (rotated 90 degrees)


def ascii_text(text: str) -> str:
    """``text`` without accents and without characters the built-in font cannot draw."""
    plain = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in plain if not unicodedata.combining(ch)).encode("ascii", "ignore").decode()


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _gradient(top: RGB, bottom: RGB, rows: int, width: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, rows, dtype=np.float32)[:, None, None]
    column = (1 - t) * np.array(top, np.float32) + t * np.array(bottom, np.float32)
    return np.broadcast_to(column, (rows, width, 3))


def _background(spec: SceneSpec) -> Image.Image:
    w, h = spec.size
    sky_top, sky_low, ground_far, ground_near = PALETTES[spec.climate]
    y = int(h * spec.horizon)
    pixels = np.concatenate([_gradient(sky_top, sky_low, y, w), _gradient(ground_far, ground_near, h - y, w)])
    rng = np.random.default_rng(spec.noise_seed)
    grain = rng.normal(0.0, 7.0, size=(h // 4, w // 4, 1)).astype(np.float32)  # coarse grain, cheap
    grain = np.repeat(np.repeat(grain, 4, axis=0), 4, axis=1)
    grain[:y] *= 0.25  # the sky is smoother than the ground
    return Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8), "RGB")


def _draw_land(draw: ImageDraw.ImageDraw, spec: SceneSpec, rng: np.random.Generator) -> None:
    w, h = spec.size
    y = int(h * spec.horizon)
    if spec.mountains:
        xs = np.linspace(0, w, 9)
        peaks = [(float(x), float(y - rng.uniform(0.05, 0.22) * h)) for x in xs]
        shade = tuple(int(c * 0.75) for c in PALETTES[spec.climate][2])
        draw.polygon([(0, y), *peaks, (w, y)], fill=shade)
    vanish = w * (0.5 + rng.uniform(-0.08, 0.08))
    draw.polygon([(vanish - 4, y), (vanish + 4, y), (w * 0.86, h), (w * 0.14, h)], fill=(88, 88, 92))
    for k in range(8):  # centre dashes, longer as they come closer
        t0, t1 = (k / 8) ** 1.6, ((k + 0.5) / 8) ** 1.6
        y0, y1 = y + t0 * (h - y), y + t1 * (h - y)
        x0, x1 = vanish + t0 * (w / 2 - vanish), vanish + t1 * (w / 2 - vanish)
        half0, half1 = 1 + 6 * t0, 1 + 6 * t1
        draw.polygon([(x0 - half0, y0), (x0 + half0, y0), (x1 + half1, y1), (x1 - half1, y1)], fill=spec.centre_line)


def _sign(spec: SceneSpec) -> Image.Image:
    font = _font(spec.sign_font_px)
    pad = max(4, spec.sign_font_px // 3)
    boxes = [font.getbbox(line) for line in spec.sign_lines]
    width = max(b[2] - b[0] for b in boxes) + 2 * pad
    line_h = int(spec.sign_font_px * 1.25)
    sign = Image.new("RGBA", (width, line_h * len(spec.sign_lines) + 2 * pad), spec.sign_colour + (255,))
    draw = ImageDraw.Draw(sign)
    draw.rectangle([1, 1, sign.width - 2, sign.height - 2], outline=(245, 245, 245, 255), width=max(1, pad // 3))
    for i, line in enumerate(spec.sign_lines):
        draw.text((pad, pad + i * line_h), line, font=font, fill=(250, 250, 250, 255))
    if spec.sign_tilt_deg:
        sign = sign.rotate(spec.sign_tilt_deg, resample=Image.Resampling.BICUBIC, expand=True)
    return sign


def _place_sign(image: Image.Image, spec: SceneSpec) -> None:
    w, h = spec.size
    sign = _sign(spec)
    cx = int(w * spec.sign_x)
    top = int(h * spec.horizon) - sign.height // 2 - int(0.05 * h)
    draw = ImageDraw.Draw(image)
    pole_w = max(3, spec.sign_font_px // 6)
    draw.rectangle([cx - pole_w // 2, top + sign.height // 2, cx + pole_w // 2, int(h * (spec.horizon + 0.18))],
                   fill=(120, 120, 125))
    image.paste(sign, (cx - sign.width // 2, max(0, top)), sign)


def _place_flag(draw: ImageDraw.ImageDraw, spec: SceneSpec) -> None:
    assert spec.flag is not None
    w, h = spec.size
    x = int(w * (0.9 if spec.sign_x < 0.5 else 0.06))
    y = int(h * spec.horizon) - int(0.2 * h)
    fw, fh = int(0.06 * w), int(0.045 * w)
    draw.rectangle([x - 2, y, x + 1, y + int(0.26 * h)], fill=(200, 200, 200))
    for k, colour in enumerate(spec.flag):
        draw.rectangle([x + 2 + k * fw // 3, y, x + 2 + (k + 1) * fw // 3, y + fh], fill=colour)


def _place_banner(draw: ImageDraw.ImageDraw, spec: SceneSpec) -> None:
    assert spec.banner is not None
    w, h = spec.size
    font = _font(max(12, h // 40))
    x0, y0, x1, y1 = font.getbbox(spec.banner)
    left, top = int(0.5 * w - (x1 - x0) / 2), int(h * spec.horizon) - int(0.3 * h)
    for post_x in (left, left + x1 - x0):  # a billboard on two posts
        draw.rectangle([post_x - 2, top, post_x + 2, int(h * spec.horizon)], fill=(110, 100, 90))
    draw.rectangle([left - 8, top - 6, left + x1 - x0 + 8, top + y1 - y0 + 10], fill=(240, 236, 220))
    draw.text((left - x0, top - y0), spec.banner, font=font, fill=(30, 30, 30))


def render(spec: SceneSpec) -> Image.Image:
    """The scene as an RGB image of ``spec.size`` (height and width swapped if ``turned``)."""
    image = _background(spec)
    draw = ImageDraw.Draw(image)
    _draw_land(draw, spec, np.random.default_rng(spec.noise_seed + 1))
    if spec.banner:
        _place_banner(draw, spec)
    if spec.flag:
        _place_flag(draw, spec)
    _place_sign(image, spec)
    return image.transpose(Image.Transpose.ROTATE_90) if spec.turned else image
