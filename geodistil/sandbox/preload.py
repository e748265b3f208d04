"""What the zygote imports and exercises once, while it can still open files.

After lockdown a child cannot open a file, so a module or plugin that is imported (or a
font or time zone that is read) for the first time inside a child would fail there.
"""

from __future__ import annotations

import time

STDLIB_EXTRAS = ("collections", "colorsys", "functools", "itertools", "random", "statistics", "string", "re")


def preload() -> None:
    import numpy as np
    import numpy.fft  # noqa: F401
    import numpy.linalg  # noqa: F401
    from PIL import (  # noqa: F401
        Image, ImageChops, ImageColor, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageMath,
        ImageOps, ImageStat,
    )

    Image.init()  # every format plugin, so Image.open(BytesIO) works without a file lookup
    # keep freed image blocks for the next job's input image: reused pages cost a cheap fault,
    # fresh ones a slow one (zeroed, and in a VM often backed by the host on first touch)
    Image.core.set_blocks_max(4)
    sample = Image.new("RGB", (16, 16), (10, 20, 30))
    ImageDraw.Draw(sample).text((1, 1), "a", fill=(255, 255, 255))  # loads the default font
    ImageOps.autocontrast(ImageOps.grayscale(sample.filter(ImageFilter.GaussianBlur(1))))
    ImageEnhance.Contrast(sample).enhance(1.5)
    np.fft.fft2(np.asarray(sample, dtype=np.float64)[..., 0])
    np.linalg.svd(np.eye(3))
    np.random.default_rng(0).random(3)
    time.localtime()  # reads the time zone file once
    for name in STDLIB_EXTRAS:
        __import__(name)
