"""SFT export: every row loads back with ``datasets``, placeholders match images, pixels match replay."""

from __future__ import annotations

import io
import json

import datasets
import pytest
from PIL import Image

from geodistil.curate import FilterConfig, run_filter
from geodistil.export import ExportConfig, image_refs, run_export, training_turns, trl_messages
from geodistil.images import pixel_sha256
from geodistil.replay import pixel_hashes, rebuild_images
from geodistil.store import TraceStore
from geodistil.trace import ImagePart, Message, TextPart, Trace
from tests.trace_sets import copy_store, damage

# the trace-set fixtures, shared by every module in the session (an import would make one per module)
pytest_plugins = ["tests.fixtures_traces"]


@pytest.fixture(scope="module")
def curated(small_set, tmp_path_factory) -> TraceStore:
    """The small set after the default filter: a few dozen traces, quick to replay."""
    dest = TraceStore(str(tmp_path_factory.mktemp("export-src") / "curated"))
    run_filter(small_set.store, dest, FilterConfig(min_reward=0.0))
    return dest


def native_trace() -> Trace:
    call = {"id": "c1", "type": "function",
            "function": {"name": "image_zoom_in_tool", "arguments": '{"bbox_2d": [0, 0, 10, 10]}'}}
    return Trace(dataset_path="d", dataset_fingerprint="f", sample_index=0, messages=[
        Message(role="system", content="You are a helpful assistant."),
        Message(role="user", content=[ImagePart(ref=0), TextPart(text="Where is this?")]),
        Message(role="assistant", content=None, tool_calls=[call]),
        Message(role="tool", tool_call_id="c1", content="<tool_response>\nimage 1\n</tool_response>"),
        Message(role="user", content=[ImagePart(ref=1), TextPart(text="The images above are the tool outputs.")]),
        Message(role="assistant", content="Paris. \\boxed{48.85, 2.35}", reasoning="The sign says Paris."),
        Message(role="user", content="a trailing turn with nothing after it"),
    ])


def test_native_tool_calls_become_text_and_tool_results_join_the_next_user_turn():
    turns = training_turns(native_trace())
    assert [t.role for t in turns] == ["system", "user", "assistant", "user", "assistant"]
    assert turns[2].text() == '<tool_call>\n{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [0, 0, 10, 10]}}' \
                              "\n</tool_call>"
    assert turns[3].parts[0].startswith("<tool_response>") and turns[3].parts[1] == 1
    assert image_refs(turns) == [0, 1]


def test_reasoning_is_kept_only_when_asked():
    assert "<think>" not in training_turns(native_trace())[-1].text()
    assert training_turns(native_trace(), include_reasoning=True)[-1].text().startswith(
        "<think>\nThe sign says Paris.\n</think>")


def test_trl_messages_use_image_placeholders_in_content_lists():
    messages = trl_messages(training_turns(native_trace()))
    assert messages[1] == {"role": "user", "content": [{"type": "image", "text": None},
                                                       {"type": "text", "text": "Where is this?"}]}
    assert sum(p["type"] == "image" for m in messages for p in m["content"]) == 2


def assert_rows_match_replay(rows, src: TraceStore, images_of) -> int:
    """Every row: placeholders == images, and each image's pixels are what replay rebuilds."""
    checked = 0
    for row in rows:
        placeholders, images = images_of(row)
        assert placeholders == len(images) > 0, row["trace"]
        trace = src.read_trace(row["trace"])
        rebuilt = rebuild_images(trace)
        recorded = pixel_hashes(trace)  # a dataset image sent as its file: the pixels of the verified file
        refs = image_refs(training_turns(trace))
        assert [pixel_sha256(im) for im in images] == [recorded[r] for r in refs] == \
            [pixel_sha256(rebuilt[r]) for r in refs]
        checked += 1
    return checked


def hf_images(row):
    return sum(p["type"] == "image" for m in row["messages"] for p in m["content"]), row["images"]


def test_hf_export_loads_back_and_its_images_match_replay(curated, tmp_path):
    dest = TraceStore(str(tmp_path / "export"))
    manifest = run_export(curated, dest, ExportConfig(format="hf", shard_rows=10))
    assert manifest["verification"]["ok"], manifest["verification"]
    assert manifest["rows"] == len(curated.trace_names()) and manifest["skipped"] == 0
    assert len(manifest["parquet_files"]) == -(-manifest["rows"] // 10)
    on_disk = datasets.load_from_disk(str(tmp_path / "export" / "hf"))
    parquet = datasets.load_dataset("parquet", data_files=str(tmp_path / "export" / "parquet" / "*.parquet"),
                                    split="train", cache_dir=str(tmp_path / "cache"))
    for ds in (on_disk, parquet):
        assert set(ds.column_names) >= {"messages", "images"}
        assert isinstance(ds.features["images"], datasets.List)
        assert ds["trace"] == curated.trace_names()  # in sample order
        assert assert_rows_match_replay(ds, curated, hf_images) == manifest["rows"]
        for row in ds:
            roles = [m["role"] for m in row["messages"]]
            assert roles[0] == "system" and roles[-1] == "assistant"
            assert all(a != b for a, b in zip(roles[1:], roles[2:]))  # user and assistant alternate


def sharegpt_images(root):
    def images_of(row):
        placeholders = sum(turn["value"].count("<image>") for turn in row["conversations"])
        return placeholders, [Image.open(io.BytesIO((root / path).read_bytes())) for path in row["images"]]
    return images_of


def test_sharegpt_export_loads_back_and_its_images_match_replay(curated, tmp_path):
    dest = TraceStore(str(tmp_path / "export"))
    manifest = run_export(curated, dest, ExportConfig(format="sharegpt"))
    assert manifest["verification"]["ok"], manifest["verification"]
    root = tmp_path / "export" / "sharegpt"
    info = json.loads((root / "dataset_info.json").read_text())["geodistil"]
    assert info["formatting"] == "sharegpt" and info["file_name"] == "data.json"
    ds = datasets.load_dataset("json", data_files=str(root / "data.json"), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert len(ds) == manifest["rows"] == len(curated.trace_names())
    assert assert_rows_match_replay(ds, curated, sharegpt_images(root)) == len(ds)
    for row in ds:
        sides = [turn["from"] for turn in row["conversations"]]
        assert sides[0] == "human" and sides[-1] == "gpt" and len(sides) % 2 == 0
        assert all(s == ("human", "gpt")[i % 2] for i, s in enumerate(sides))
    # the photo a sample's rollouts share is stored once
    assert manifest["image_files"] < sum(len(row["images"]) for row in ds)


def test_bad_failed_and_tampered_traces_are_skipped_by_name(small_set, tmp_path):
    src = copy_store(small_set, tmp_path / "damaged")
    broken = damage(src)
    ok_names = [n for n, t in src.iter_traces() if not isinstance(t, Exception) and t.ok and t.tool_calls_log
                and any(c.success for c in t.tool_calls_log)]
    tampered = ok_names[0]
    data = json.loads(src.read_bytes(tampered))
    data["images"][1]["sha256"] = "0" * 64
    src.write_bytes(tampered, json.dumps(data).encode())
    manifest = run_export(src, TraceStore(str(tmp_path / "export")), ExportConfig(format="sharegpt"))
    skipped = manifest["skipped_traces"]
    for name, why in broken.items():
        assert any(s.startswith(name) and why in s for s in skipped)
    assert any(s.startswith(tampered) and "differ from the recorded sha256" in s for s in skipped)
    assert any("failed trace" in s for s in skipped)  # the set's teacher errors
    assert manifest["rows"] + manifest["skipped"] == small_set.samples * small_set.rollouts
    assert manifest["verification"]["ok"]


@pytest.mark.parametrize("fmt", ["hf", "sharegpt"])
def test_export_to_s3_loads_back_and_verifies(curated, s3, fmt):
    dest = TraceStore(f"s3://{s3.bucket}/export-{fmt}", s3.options)
    manifest = run_export(curated, dest, ExportConfig(format=fmt))
    assert manifest["rows"] == len(curated.trace_names())
    check = manifest["verification"]
    assert check["ok"], check
    assert all(part["rows"] == manifest["rows"] for key, part in check.items() if key != "ok")
    assert dest.read_json(f"export-{fmt}.json")["rows"] == manifest["rows"]


@pytest.mark.slow
def test_every_row_of_a_100_x_4_export_loads_and_matches_replay(big_set, tmp_path):
    curated = TraceStore(str(tmp_path / "curated"))
    run_filter(big_set.store, curated, FilterConfig(min_reward=0.0, dedup_answers=False))
    for fmt in ("hf", "sharegpt"):
        manifest = run_export(curated, TraceStore(str(tmp_path / fmt)), ExportConfig(format=fmt))
        assert manifest["verification"]["ok"], manifest["verification"]
        assert manifest["rows"] == len(curated.trace_names()) and manifest["skipped"] == 0
    ds = datasets.load_from_disk(str(tmp_path / "hf" / "hf"))
    assert assert_rows_match_replay(ds, curated, hf_images) == len(ds)


# -- the format registry: a new format is one class ---------------------------------------------

@pytest.fixture()
def formats():
    """The registry, restored after the test."""
    from geodistil.export_formats import FORMATS

    saved = dict(FORMATS)
    yield FORMATS
    FORMATS.clear()
    FORMATS.update(saved)


def test_a_format_registered_in_a_test_exports_and_verifies_through_run_export(curated, tmp_path, formats):
    import base64

    from geodistil.export_formats import ExportFormat, open_image, register_format
    from geodistil.replay import png_bytes

    @register_format
    class JsonLines(ExportFormat):  # one row per line, images inline as base64 PNG
        name = "tiny-jsonl"
        help = "JSON lines, images inline"

        def write(self, rows, dest, options):
            lines = []
            for r in rows:
                text = " ".join("[img]" if isinstance(p, int) else p for t in r.turns for p in t.parts)
                pngs = [base64.b64encode(png_bytes(r.images[ref])).decode() for ref in image_refs(r.turns)]
                lines.append(json.dumps({"text": text, "png": pngs} | r.metadata))
            dest.write_bytes("tiny/rows.jsonl", "\n".join(lines).encode())
            return {"rows": len(lines)}

        def load_back(self, dest, cache):
            return [("tiny", datasets.load_dataset("json", data_files=dest.sub("tiny").url + "/rows.jsonl",
                                                   split="train", cache_dir=cache))]

        def count_images(self, what, row, dest):
            return row["text"].count("[img]"), [open_image(base64.b64decode(p)) for p in row["png"]]

    assert "tiny-jsonl" in formats
    manifest = run_export(curated, TraceStore(str(tmp_path / "export")), ExportConfig(format="tiny-jsonl"))
    assert manifest["rows"] == len(curated.trace_names()) and manifest["skipped"] == 0
    assert manifest["verification"]["ok"] and manifest["verification"]["tiny"]["images"] > manifest["rows"]
    assert (tmp_path / "export" / "export-tiny-jsonl.json").exists()


def test_an_unregistered_format_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown export format 'nope'; known: hf, sharegpt"):
        ExportConfig(format="nope")


def test_the_cli_offers_exactly_the_registered_formats(formats):
    from typer.testing import CliRunner

    from geodistil.cli import app
    from geodistil.export_formats import ExportFormat, register_format

    @register_format
    class Extra(ExportFormat):
        name = "extra"
        help = "a format added by a test"

    result = CliRunner().invoke(app, ["export", "src", "dest", "--format", "bogus"])
    assert result.exit_code == 2 and "--format must be one of hf, sharegpt, extra" in result.output
