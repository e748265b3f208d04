"""Decoding a dataset image no larger than needed: a large JPEG at a reduced scale, recorded in
the trace so replay repeats it; a cap on decoded pixels beyond which the sample is an error."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image, ImageDraw

from geodistil.config import GenerationConfig, ImageConfig, RolloutSettings, TeacherConfig
from geodistil.data import Decoding
from geodistil.images import pixel_sha256, preprocess
from geodistil.replay import verify_trace
from geodistil.rollout import _load
from geodistil.sim.server import SimConfig, SimServer
from geodistil.trace import Trace
from tests.test_sent_images import dataset_of, roll_out

SMALL_SEND = 200 * 150  # max_pixels that makes a 4000x3000 photo 8 times too large each way


def photo(fmt: str, size=(4000, 3000)) -> bytes:
    """A file with detail at every scale, so decoding at another scale gives other pixels."""
    image = Image.new("RGB", size, (90, 140, 60))
    draw = ImageDraw.Draw(image)
    for i in range(0, size[0], 37):
        draw.line((i, 0, size[0] - i, size[1]), fill=(i % 255, 40, 200 - i % 200), width=3)
    buf = io.BytesIO()
    options = {"PNG": {"compress_level": 1}, "JPEG": {"quality": 90},
               "MPO": {"quality": 90, "save_all": True, "append_images": [image.rotate(90)]}}  # MPO: 2 frames
    image.save(buf, format=fmt, **options[fmt])
    return buf.getvalue()


def rolled_out(tmp_path, file: bytes, image: ImageConfig, tool_calls: int = 2) -> tuple[Trace, object]:
    dataset = dataset_of(tmp_path, [file])
    with SimServer(SimConfig(port=0, seed=3, tool_calls=tool_calls)) as sim:
        settings = RolloutSettings(teacher=TeacherConfig(base_url=sim.base_url, timeout_s=30),
                                   generation=GenerationConfig(max_turns=6), image=image)
        return roll_out(dataset, settings), dataset


def test_a_large_jpeg_is_decoded_at_the_smallest_scale_that_covers_the_sent_size(tmp_path):
    sample = dataset_of(tmp_path, [photo("JPEG")]).sample(0, Decoding(fit=SMALL_SEND))
    assert (sample.original_size, sample.decode_scale, sample.image.size) == ((4000, 3000), 8, (500, 375))


@pytest.mark.parametrize("fmt", ["JPEG", "MPO"])  # MPO: the JPEG-based files of many phones
def test_a_jpeg_within_the_cap_once_scaled_down_is_no_error(tmp_path, fmt):
    sample = dataset_of(tmp_path, [photo(fmt)]).sample(0, Decoding(fit=SMALL_SEND, max_pixels=1_000_000))
    assert sample.image.size[0] * sample.image.size[1] <= 1_000_000


def test_an_image_decoding_to_more_pixels_than_the_cap_is_that_samples_error(tmp_path):
    trace, _ = rolled_out(tmp_path, photo("PNG", (3000, 2000)), ImageConfig(max_decoded_pixels=1_000_000))
    assert trace.error_kind == "sample_error" and trace.stop_reason == "error"
    assert trace.error.startswith("sample 0: image 3000x2000 would decode to 3000x2000, 6.0 megapixels, "
                                  "above the cap of 1.0 (image.max_decoded_pixels)")


def test_the_conversation_keeps_only_the_image_as_sent(tmp_path):
    sample, sent, _ = _load(dataset_of(tmp_path, [photo("PNG", (3000, 2000))]), 0, ImageConfig(max_pixels=SMALL_SEND))
    assert sample.image is sent and sent.size == (212, 141)
    assert sample.encoded is None and sample.original_size == (3000, 2000)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_trace_decoded_at_a_reduced_scale_records_it_and_replays_exactly(tmp_path, fmt):
    trace, dataset = rolled_out(tmp_path, photo(fmt), ImageConfig(max_pixels=SMALL_SEND))
    assert trace.ok and trace.preprocess.decode_scale == 8 and len(trace.images) > 1  # tool outputs too
    full = dataset.sample(0)  # decoding at full size gives other pixels: the recorded scale matters
    assert pixel_sha256(preprocess(full.image, SMALL_SEND)) != trace.images[0].sha256
    assert verify_trace(trace, dataset=dataset).ok


def test_a_trace_from_before_decode_scales_replays_at_full_size(tmp_path):
    trace, dataset = rolled_out(tmp_path, photo("JPEG"), ImageConfig(max_pixels=SMALL_SEND), tool_calls=0)
    data = json.loads(trace.to_json())  # as the code before decode scales wrote it: no field, full decode
    del data["preprocess"]["decode_scale"]
    data["images"][0]["sha256"] = pixel_sha256(preprocess(dataset.sample(0).image, SMALL_SEND))
    old = Trace.from_json(json.dumps(data))
    assert old.preprocess.decode_scale == 1
    assert verify_trace(old, dataset=dataset).ok
