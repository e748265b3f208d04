"""The one replay core: replay, export and the viewer agree on a corrupted trace, naming the same
image; tools are rebuilt with the settings the trace recorded, and older traces still replay."""

from __future__ import annotations

import re

import pytest

from geodistil.config import BoxConvention, ToolsConfig
from geodistil.export import ExportConfig, run_export
from geodistil.replay import rebuild, tools_for, verify_store, verify_trace
from geodistil.store import TraceStore
from geodistil.tools import TOOL_NAMES, build_tools, tool_from_settings
from geodistil.trace import Trace
from tests.viewer_support import viewer_client

# the trace-set fixtures, shared by every module in the session (an import would make one per module)
pytest_plugins = ["tests.fixtures_traces"]

ZOOM = "image_zoom_in_tool"


def with_tool_output(store: TraceStore, tool: str | None = None) -> tuple[str, Trace]:
    """A trace whose first successful tool call (of ``tool``, if given) made an image the conversation shows."""
    for name, trace in store.iter_traces():
        if isinstance(trace, Exception) or not trace.ok:
            continue
        if any(c.success and c.output_ref and (tool is None or c.tool_name == tool) for c in trace.tool_calls_log):
            return name, trace
    raise AssertionError(f"no trace with a successful {tool or 'tool'} call")


def bad_refs_in_page(html: str) -> set[int]:
    """The images the viewer's trace page marks with a cross."""
    return {int(ref) for ref, check in re.findall(r'alt="image (\d+)".*?<span class="check (\w+)"', html, re.S)
            if check == "bad"}


def corrupt_output_hash(trace: Trace) -> tuple[Trace, int]:
    call = next(c for c in trace.tool_calls_log if c.success and c.output_ref)
    log = [c.model_copy(update={"output_sha256": "0" * 64}) if c is call else c for c in trace.tool_calls_log]
    return trace.model_copy(update={"tool_calls_log": log}), call.output_ref


def corrupt_input_image_hash(trace: Trace) -> tuple[Trace, int]:
    images = [r.model_copy(update={"sha256": "f" * 64}) if r.ref == 0 else r for r in trace.images]
    return trace.model_copy(update={"images": images}), 0


@pytest.mark.parametrize("corrupt", [corrupt_output_hash, corrupt_input_image_hash])
def test_replay_export_and_viewer_agree_a_corrupted_trace_is_bad_and_name_the_same_image(
        single_rollout_set, tmp_path, corrupt):
    _, good = with_tool_output(single_rollout_set.store)
    bad, ref = corrupt(good)
    store = TraceStore(str(tmp_path / "one"))
    name = store.write_trace(bad)
    expected = rebuild(bad).problems()
    assert len(expected) == 1 and expected[0].startswith(f"image {ref}: ")

    replayed = verify_store(store)  # what `geodistil replay` prints
    assert replayed.failed == 1 and replayed.failures == [f"{name}: {expected[0]}"]

    exported = run_export(store, TraceStore(str(tmp_path / "export")), ExportConfig(format="sharegpt", verify=False))
    assert exported["rows"] == 0 and exported["skipped_traces"] == [f"{name}: {expected[0]}"]

    page = viewer_client(store).get(f"/trace/{name}")
    assert page.status_code == 200 and bad_refs_in_page(page.text) == {ref}


def test_the_uncorrupted_trace_passes_all_three(single_rollout_set, tmp_path):
    _, good = with_tool_output(single_rollout_set.store)
    store = TraceStore(str(tmp_path / "one"))
    name = store.write_trace(good)
    assert rebuild(good).ok and verify_store(store).ok
    assert run_export(store, TraceStore(str(tmp_path / "export")), ExportConfig(format="sharegpt", verify=False)
                      )["rows"] == 1
    page = viewer_client(store).get(f"/trace/{name}").text
    assert bad_refs_in_page(page) == set() and "✓ hash matches" in page


# -- tool settings ----------------------------------------------------------------------------

def test_every_trace_records_the_settings_of_each_tool_it_offered(single_rollout_set):
    _, trace = with_tool_output(single_rollout_set.store)
    offered = build_tools(ToolsConfig())
    assert trace.teacher.tool_settings == {name: tool.settings() for name, tool in offered.items()}


def test_each_tool_is_rebuilt_from_its_settings_as_it_was():
    config = ToolsConfig(enabled=TOOL_NAMES, box_convention=BoxConvention.REL_1, code_timeout_s=33)
    for name, tool in build_tools(config).items():
        assert tool_from_settings(name, tool.settings()) == tool, name


def test_replay_builds_tools_from_the_recorded_settings_not_the_teacher_fields(single_rollout_set):
    _, trace = with_tool_output(single_rollout_set.store, ZOOM)
    assert trace.teacher.tool_settings[ZOOM] == {"box_convention": "absolute"}
    misleading = trace.teacher.model_copy(update={"box_convention": "relative_1000"})
    assert verify_trace(trace.model_copy(update={"teacher": misleading})).ok  # the recorded settings win
    other = trace.teacher.model_copy(update={"tool_settings": {**trace.teacher.tool_settings,
                                                               ZOOM: {"box_convention": "relative_1000"}}})
    changed = trace.model_copy(update={"teacher": other})
    assert tools_for(changed)[ZOOM].box_convention is BoxConvention.REL_1000
    assert not verify_trace(changed).ok  # other settings, other pixels: replay used what the trace says


def test_a_trace_from_before_tool_settings_replays_as_before(single_rollout_set):
    _, trace = with_tool_output(single_rollout_set.store, ZOOM)
    data = trace.model_dump(mode="json")
    del data["teacher"]["tool_settings"]
    old = Trace.model_validate(data)
    assert old.teacher.tool_settings is None
    assert tools_for(old)[ZOOM].box_convention is BoxConvention.ABSOLUTE  # from teacher.box_convention
    result = verify_trace(old)
    assert result.ok and result.images == len(old.images)


def test_a_trace_whose_settings_leave_out_a_tool_it_used_fails_by_name(single_rollout_set):
    _, trace = with_tool_output(single_rollout_set.store, ZOOM)
    settings = {k: v for k, v in trace.teacher.tool_settings.items() if k != ZOOM}
    broken = trace.model_copy(update={"teacher": trace.teacher.model_copy(update={"tool_settings": settings})})
    assert verify_trace(broken).mismatches == [
        f"sample {trace.sample_index}: the trace records no settings for tools ['{ZOOM}']"]
