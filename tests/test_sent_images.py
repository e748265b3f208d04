"""What the teacher is sent: the dataset's own JPEG when that shows exactly the pixels the
tools work on, else an encoding of those pixels; request bodies joined from messages encoded once."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json

import datasets
import pytest
from PIL import Image

from geodistil.config import GenerationConfig, ImageConfig, RolloutSettings, TeacherConfig
from geodistil.data import DatasetSpec, GeoDataset
from geodistil.images import data_url, encode, pixel_sha256, sendable_source
from geodistil.replay import pixel_hashes, rebuild, verify_trace
from geodistil.rollout import RolloutContext, _load, rollout
from geodistil.sim.server import SimConfig, SimServer
from geodistil.teacher import EncodedMessages


def encoded(fmt: str, size=(320, 240), exif_orientation: int | None = None) -> bytes:
    image = Image.new("RGB", size, (40, 120, 200))
    image.paste((250, 250, 0), (20, 20, 120, 80))
    buf = io.BytesIO()
    kwargs = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def dataset_of(tmp_path, files: list[bytes]) -> GeoDataset:
    rows = {"image": [{"bytes": f, "path": None} for f in files], "lat": [48.85] * len(files),
            "lon": [2.35] * len(files), "clues": ["A road sign reads: Paris 5 km"] * len(files)}
    features = datasets.Features({"image": datasets.Image(), "lat": datasets.Value("float64"),
                                  "lon": datasets.Value("float64"), "clues": datasets.Value("string")})
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    return GeoDataset(DatasetSpec(path=str(tmp_path / "ds")))


def roll_out(dataset: GeoDataset, settings: RolloutSettings):
    """Sample 0, rollout 0, through a fresh teacher client."""
    async def one():
        ctx = RolloutContext.create(settings)
        try:
            return await rollout(dataset, 0, 0, ctx)
        finally:
            await ctx.close()

    return asyncio.run(one())


def test_a_stored_jpeg_at_its_own_size_is_sent_as_its_own_bytes_and_never_decoded(tmp_path):
    jpeg = encoded("JPEG")
    sample, sent, source = _load(dataset_of(tmp_path, [jpeg]), 0, ImageConfig())
    assert source == jpeg
    assert sent is sample.image  # the pixels the tools and replay use are the decoded file
    assert sent.tile  # Pillow's pending decode: no pixel was decoded to send it
    assert pixel_sha256(sent) == pixel_sha256(Image.open(io.BytesIO(jpeg)))  # a tool that reads it decodes it


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b[:2] + b"\xff" * 40 + b[42:]])
def test_a_broken_jpeg_is_that_samples_error_when_it_loads(tmp_path, damage):
    """Cut short (no end-of-image marker): decoded at once, so the sample fails when it loads. Broken
    inside but complete: sent as it is (a decode costs what it saves), so it is the teacher's to refuse
    and a tool that reads it fails as that call's error; either way one line and the run goes on."""
    from geodistil.errors import SampleError

    jpeg = damage(encoded("JPEG"))
    try:
        _, sent, source = _load(dataset_of(tmp_path, [jpeg]), 0, ImageConfig())
    except SampleError as exc:
        assert "sample 0" in str(exc) and "image cannot be decoded" in str(exc)
    else:
        assert source == jpeg and sent.tile and jpeg.rstrip(b"\0").endswith(b"\xff\xd9")


@pytest.mark.parametrize("fmt, size, max_pixels, orientation, why", [
    ("PNG", (320, 240), 1024 * 768, None, "not a JPEG"),
    ("JPEG", (320, 240), 200 * 150, None, "resized before sending"),
    ("JPEG", (320, 240), 1024 * 768, 6, "a viewer would rotate it by its EXIF orientation"),
    ("JPEG", (640, 480), 320 * 240, None, "decoded at half its size, which the file would not show"),
])
def test_other_images_are_encoded_from_their_pixels(tmp_path, fmt, size, max_pixels, orientation, why):
    _, _, source = _load(dataset_of(tmp_path, [encoded(fmt, size, orientation)]), 0, ImageConfig(max_pixels=max_pixels))
    assert source is None, why


def test_png_sending_never_sends_a_jpeg_file():
    image = Image.open(io.BytesIO(encoded("JPEG")))
    image.load()
    assert sendable_source(image, image, encoded("JPEG"), fmt="png", stored_size=image.size) is None


def test_the_request_body_is_the_messages_encoded_once_each():
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": [{"type": "text", "text": "São Paulo? 東京?"}]}]
    encoded_messages = EncodedMessages(messages[:1])
    encoded_messages.append(messages[1])
    assert json.loads(bytes(encoded_messages)) == messages


def test_a_data_url_in_bytes_goes_into_the_body_as_it_is():
    url = data_url(encoded("JPEG"))
    image_part = {"type": "image_url", "image_url": {"url": url}}
    text_part = {"type": "text", "text": 'a "quoted" line\n'}
    body = bytes(EncodedMessages([{"role": "user", "content": [image_part, text_part]}, {"content": [image_part]}]))
    assert url in body
    as_sent = {"type": "image_url", "image_url": {"url": url.decode()}}
    assert json.loads(body) == [{"role": "user", "content": [as_sent, text_part]}, {"content": [as_sent]}]


def test_a_rollout_sends_the_file_and_its_trace_replays(tmp_path):
    jpeg = encoded("JPEG", size=(640, 480))
    dataset = dataset_of(tmp_path, [jpeg])
    with SimServer(SimConfig(port=0, seed=3, tool_calls=2)) as sim:
        settings = RolloutSettings(teacher=TeacherConfig(base_url=sim.base_url, timeout_s=30),
                                   generation=GenerationConfig(max_turns=6), image=ImageConfig())
        trace = roll_out(dataset, settings)
    assert trace.ok and trace.preprocess is not None and trace.preprocess.sent_as == "source"
    # what was sent is hashed, the file: its pixels were decoded only for the tools
    assert trace.images[0].file_sha256 == hashlib.sha256(jpeg).hexdigest() and trace.images[0].sha256 is None
    assert all(record.sha256 for record in trace.images[1:])  # tool outputs: their pixels
    assert len(trace.tool_calls_log) == 2  # the sim calls a tool on each of its first two turns
    assert verify_trace(trace, dataset=dataset).ok
    assert base64.b64encode(jpeg).decode() not in trace.to_json()  # the trace never holds image bytes
    tampered = trace.model_copy(deep=True)
    tampered.images[0].file_sha256 = "0" * 64
    assert rebuild(tampered, dataset).problems() == ["image 0: the dataset's file differs from the recorded file_sha256"]
    assert pixel_hashes(trace, dataset)[0] == pixel_sha256(Image.open(io.BytesIO(jpeg)))  # what an export checks


def test_native_tool_calls_and_tool_messages_go_through_the_encoded_body(tmp_path):
    dataset = dataset_of(tmp_path, [encoded("JPEG", size=(640, 480))])
    with SimServer(SimConfig(port=0, seed=5, tool_calls=2, tool_style="native")) as sim:
        settings = RolloutSettings(teacher=TeacherConfig(base_url=sim.base_url, timeout_s=30, tool_style="native"),
                                   generation=GenerationConfig(max_turns=6))
        trace = roll_out(dataset, settings)
    assert trace.ok and trace.stop_reason == "answered" and trace.parse_success
    assert len(trace.tool_calls_log) == 2 and all(c.call_id for c in trace.tool_calls_log)
    assert [m.role for m in trace.messages].count("tool") == 2  # each call answered by a tool message


@pytest.mark.parametrize("fmt, options", [("JPEG", {"quality": 90}), ("PNG", {"compress_level": 3})])
@pytest.mark.parametrize("memfd", [True, False])
def test_encode_gives_pillows_bytes_with_or_without_an_in_memory_file(monkeypatch, fmt, options, memfd):
    if not memfd:
        monkeypatch.delattr("os.memfd_create", raising=False)
    image = Image.open(io.BytesIO(encoded("JPEG")))
    image.load()
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    assert encode(image, fmt, **options) == buf.getvalue()


def test_a_text_only_teacher_is_sent_plain_strings_and_no_image_yet_the_trace_replays(tmp_path):
    dataset = dataset_of(tmp_path, [encoded("JPEG", size=(640, 480))])
    with SimServer(SimConfig(port=0, seed=4, tool_calls=1)) as sim:
        settings = RolloutSettings(teacher=TeacherConfig(base_url=sim.base_url, model="m"),
                                   generation=GenerationConfig(max_turns=4), image=ImageConfig(text_only=True))
        trace = roll_out(dataset, settings)
    assert trace.ok and trace.preprocess.sent_as == "not_sent"
    assert all(isinstance(m.content, str) or m.content is None for m in trace.messages)
    assert not any(m.image_refs() for m in trace.messages) and len(trace.images) == 1
    assert verify_trace(trace).ok  # the dataset image was still made and hashed: replay rebuilds and checks it
