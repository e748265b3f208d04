import pytest
from PIL import Image

from geodistil.config import BoxConvention, ToolsConfig
from geodistil.errors import ConfigError
from geodistil.images import pixel_sha256, preprocess
from geodistil.tools import ToolError, build_tools, input_ref_of, openai_tool_specs
from geodistil.tools.rotate import RotateTool
from geodistil.tools.zoom import ZoomInTool


def gradient(w=400, h=300):
    image = Image.new("RGB", (w, h))
    image.putdata([(x % 256, y % 256, (x + y) % 256) for y in range(h) for x in range(w)])
    return image


def test_zoom_absolute_crops_exact_pixels():
    out = ZoomInTool().apply(gradient(), {"bbox_2d": [10, 20, 110, 70]})
    assert out.image.size == (100, 50)
    assert out.image.getpixel((0, 0)) == (10, 20, 30)
    assert out.resolved == {"box_px": [10, 20, 110, 70]}


@pytest.mark.parametrize("convention, box", [
    (BoxConvention.REL_1000, [25, 66.6667, 275, 233.3333]),
    (BoxConvention.REL_1, [0.025, 0.0666667, 0.275, 0.2333333]),
])
def test_zoom_relative_conventions_resolve_to_the_same_pixels(convention, box):
    out = ZoomInTool(box_convention=convention).apply(gradient(), {"bbox_2d": box})
    assert out.resolved == {"box_px": [10, 20, 110, 70]}


def test_zoom_boxes_are_read_in_the_sent_image_space_not_the_raw_file():
    raw = gradient(2000, 1500)
    sent = preprocess(raw, 1024 * 768)
    out = ZoomInTool().apply(sent, {"bbox_2d": [0, 0, sent.width, sent.height]})
    assert out.image.size == sent.size != raw.size


def test_zoom_clamps_to_the_image_and_orders_corners():
    out = ZoomInTool().apply(gradient(), {"bbox_2d": [500, 400, 300, 200]})
    assert out.resolved == {"box_px": [300, 200, 400, 300]}


@pytest.mark.parametrize("box, message", [
    ([500, 500, 600, 600], "empty"),
    ([0, 0, 20, 100], "at least 28"),
    ([1, 2, 3], "4 numbers"),
    (["a", 0, 1, 1], "numbers"),
])
def test_zoom_rejects_bad_boxes_with_a_clear_error(box, message):
    with pytest.raises(ToolError, match=message):
        ZoomInTool().apply(gradient(), {"bbox_2d": box})


def test_zoom_rejects_extreme_aspect_ratio():
    with pytest.raises(ToolError, match="aspect ratio"):
        ZoomInTool().apply(gradient(4000, 300), {"bbox_2d": [0, 0, 3900, 30]})


def test_rotate_is_counter_clockwise_and_expands_the_canvas():
    image = gradient(400, 300)
    out = RotateTool().apply(image, {"angle": 90})
    assert out.image.size == (300, 400)
    assert out.image.getpixel((0, 399)) == image.getpixel((0, 0))
    tilted = RotateTool().apply(image, {"angle": 30}).image
    assert tilted.width > 400 and tilted.height > 300


def test_rotate_is_deterministic():
    a = RotateTool().apply(gradient(), {"angle": 17.5}).image
    b = RotateTool().apply(gradient(), {"angle": 17.5}).image
    assert pixel_sha256(a) == pixel_sha256(b)


@pytest.mark.parametrize("angle", [None, "left", float("nan"), True])
def test_rotate_rejects_non_numeric_angles(angle):
    with pytest.raises(ToolError):
        RotateTool().apply(gradient(), {"angle": angle})


def test_image_index_selects_an_existing_image():
    assert input_ref_of({}, 3) == 0
    assert input_ref_of({"image_index": 2}, 3) == 2
    with pytest.raises(ToolError, match="does not exist"):
        input_ref_of({"image_index": 3}, 3)


def test_registry_builds_enabled_tools_and_openai_specs():
    tools = build_tools(ToolsConfig(enabled=("image_rotate_tool", "image_zoom_in_tool")))
    specs = openai_tool_specs(tools)
    assert [s["function"]["name"] for s in specs] == ["image_rotate_tool", "image_zoom_in_tool"]
    assert specs[1]["function"]["parameters"]["required"] == ["bbox_2d"]
    with pytest.raises(ConfigError):
        build_tools(ToolsConfig(enabled=("nope",)))
