"""The store's layout: manifests and summaries written before the typed models still read, and
what is written now has their shape. ``tests/store_format_v1`` holds files written by geodistil
before ``ManifestRow`` and ``Summary`` existed (a 3-sample x 2-rollout run, filtered and split)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from geodistil.generate import write_outputs
from geodistil.report import render_report
from geodistil.scan import expected_names
from geodistil.stats import run_aggregate
from geodistil.store import MANIFEST, SUMMARY, Manifest, RunFacts, Summary, TraceStore
from geodistil.trace import TraceRecord

V1 = Path(__file__).parent / "store_format_v1"


def v1_store(tmp_path: Path, manifest: str = "manifest.json", summary: str = "summary.json") -> TraceStore:
    root = tmp_path / "store"
    root.mkdir()
    shutil.copy(V1 / manifest, root / MANIFEST)
    shutil.copy(V1 / summary, root / SUMMARY)
    return TraceStore(str(root))


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True)


@pytest.mark.parametrize("name, model", [("manifest.json", Manifest), ("curated_manifest.json", Manifest),
                                         ("summary.json", Summary), ("split_summary.json", Summary)])
def test_a_v1_file_reads_and_writes_back_the_same_json(name, model):
    data = json.loads((V1 / name).read_text())
    assert canonical(model.model_validate(data).to_json()) == canonical(data)


def test_a_v1_generation_manifest_reads_as_typed_rows(tmp_path):
    manifest = v1_store(tmp_path).read_manifest()
    assert manifest is not None and manifest.dataset_fingerprint == "49e3707ba3b55c94" and manifest.generated == 6
    assert [r.name for r in manifest.traces][:2] == ["trace_00000_r00.json", "trace_00000_r01.json"]
    failed = [r for r in manifest.traces if not r.ok]
    assert failed and all(r.error_kind and r.error for r in failed)


def test_a_v1_curated_manifest_without_errors_reads(tmp_path):
    manifest = v1_store(tmp_path, manifest="curated_manifest.json").read_manifest()
    assert manifest is not None and [r.error for r in manifest.traces] == [None, None]
    assert manifest.dataset_fingerprint is None


def test_a_v1_split_summary_reads_with_its_buckets(tmp_path):
    summary = v1_store(tmp_path, summary="split_summary.json").read_summary()
    assert summary is not None and summary.total == 6 and set(summary.by_difficulty or {}) == {"easy", "medium"}
    assert summary.tool_use["image_zoom_in_tool"].errors == 2
    assert summary.reward_histogram is not None and sum(summary.reward_histogram.counts) == summary.success


def test_scan_expects_every_trace_a_v1_manifest_lists(tmp_path):
    store = v1_store(tmp_path)  # the manifest lists six traces; none is there
    assert expected_names(store) == [r.name for r in store.read_manifest().traces]


def test_a_manifest_of_another_shape_reads_as_none(tmp_path):
    store = TraceStore(str(tmp_path))
    store.write_json(MANIFEST, {"rows": []})
    assert store.read_manifest() is None
    store.write_bytes(SUMMARY, b"{not json")
    assert store.read_summary() is None


def test_aggregating_a_store_keeps_the_run_facts_of_its_v1_summary(tmp_path):
    store = v1_store(tmp_path)
    summary = run_aggregate(store, report=False)
    assert summary["dataset_fingerprint"] == "49e3707ba3b55c94" and summary["generated"] == 6
    assert summary["unreadable"] == 6  # the manifest's traces are missing, and named
    assert store.read_json(SUMMARY) == summary


def test_the_report_draws_a_v1_summary_from_its_json_or_its_model():
    data = json.loads((V1 / "split_summary.json").read_text())
    from_json, from_model = render_report(data), render_report(Summary.model_validate(data))
    assert 'id="by-difficulty"' in from_json and "/data/run/split" in from_json
    assert from_json.split("<footer>")[0] == from_model.split("<footer>")[0]  # the footer has the time


def test_manifest_and_summary_written_now_have_the_v1_keys(tmp_path):
    store = TraceStore(str(tmp_path))
    records = [TraceRecord(name="trace_00001.json", sample_index=1, rollout_index=0, ok=False,
                           error_kind="teacher_error", error="HTTP 500"),
               TraceRecord(name="trace_00000.json", sample_index=0, rollout_index=0, ok=True, parse_success=True,
                           distance_km=12.0, reward_score=0.99, num_turns=1, stop_reason="answer")]
    facts = RunFacts(dataset_path="/d", dataset_fingerprint="f", settings_fingerprint="s", generated=2, reused=0)
    summary = write_outputs(store, records, facts)
    manifest, v1_manifest = store.read_json(MANIFEST), json.loads((V1 / "manifest.json").read_text())
    assert set(manifest) == set(v1_manifest)
    assert [set(row) for row in manifest["traces"]] == [set(v1_manifest["traces"][0])] * 2
    assert [row["name"] for row in manifest["traces"]] == ["trace_00000.json", "trace_00001.json"]
    v1_summary = json.loads((V1 / "summary.json").read_text())
    assert set(summary) == set(v1_summary) and store.read_json(SUMMARY) == summary
