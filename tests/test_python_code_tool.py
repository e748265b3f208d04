"""``python_code_tool``: normal image code works, gives the pixels plain Python would, and replays."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from geodistil import sandbox
from geodistil.config import ToolsConfig
from geodistil.errors import SandboxError
from geodistil.images import pixel_sha256
from geodistil.sandbox.check import Layer, SandboxReport
from geodistil.sandbox.protocol import STATUS_REFUSED, VERDICT_RESULT, Reply, Result, encode_result
from geodistil.sandbox.result import interpret
from geodistil.tools import ToolError, build_tools
from geodistil.tools.python_code import PythonCodeTool

TOOL = PythonCodeTool(timeout_s=5.0)


@pytest.fixture(scope="module", autouse=True)
def _close_pool_after() -> Iterator[None]:
    yield
    sandbox.shutdown()


def photo(w: int = 96, h: int = 64) -> Image.Image:
    rng = np.random.default_rng(7)
    base = np.linspace(0, 200, w * h * 3).reshape(h, w, 3)
    return Image.fromarray((base + rng.integers(0, 55, (h, w, 3))).astype(np.uint8), "RGB")


def in_process(code: str, image: Image.Image) -> Image.Image:
    """What the same code gives when run plainly, to compare pixels with the sandbox."""
    namespace = {"image": image.copy(), "Image": Image, "ImageOps": ImageOps, "ImageEnhance": ImageEnhance,
                 "ImageFilter": ImageFilter, "ImageDraw": ImageDraw, "np": np, "math": math}
    exec(compile(code, "<code>", "exec"), namespace)  # noqa: S102 - trusted test code, the reference
    return namespace["result_image"]


NORMAL_CODE = {
    "filters": "result_image = image.filter(ImageFilter.GaussianBlur(2)).filter(ImageFilter.SHARPEN)",
    "imageops": "result_image = ImageOps.autocontrast(ImageOps.mirror(image.rotate(30, expand=True)))",
    "enhance+crop": "result_image = ImageEnhance.Contrast(image.crop((10, 5, 80, 60))).enhance(2.0)",
    "drawing": ("d = ImageDraw.Draw(image)\nd.rectangle((5, 5, 40, 30), outline=(255, 0, 0), width=2)\n"
                "d.text((8, 40), 'km 12', fill=(255, 255, 0))\nresult_image = image"),
    "numpy arithmetic": ("a = np.asarray(image, dtype=np.float32)\n"
                         "g = (0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2])\n"
                         "result_image = Image.fromarray(np.clip((g - g.mean()) * 2 + 128, 0, 255).astype(np.uint8))"),
    "fft low-pass": ("g = np.asarray(image.convert('L'), dtype=np.float64)\n"
                     "f = np.fft.fftshift(np.fft.fft2(g))\nh, w = f.shape\n"
                     "y, x = np.ogrid[:h, :w]\nf[(y - h // 2) ** 2 + (x - w // 2) ** 2 > 15 ** 2] = 0\n"
                     "out = np.abs(np.fft.ifft2(np.fft.ifftshift(f)))\n"
                     "result_image = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))"),
    "threshold+histogram": ("g = image.convert('L')\nprint(g.histogram()[:4])\n"
                            "result_image = g.point(lambda v: 255 if v > 128 else 0).convert('1')"),
}


@pytest.mark.parametrize("code", NORMAL_CODE.values(), ids=NORMAL_CODE.keys())
def test_normal_image_code_gives_the_same_pixels_as_plain_python(code: str) -> None:
    out = TOOL.apply(photo(), {"code": code})
    expected = in_process(code, photo())
    assert out.image.mode == expected.mode and out.image.size == expected.size
    assert pixel_sha256(out.image) == pixel_sha256(expected)


def test_the_resolved_arguments_record_the_code_hash() -> None:
    code = "result_image = image.rotate(90)"
    out = TOOL.apply(photo(), {"code": code})
    assert out.resolved == {"code_sha256": hashlib.sha256(code.encode()).hexdigest()}


def test_printed_text_comes_back() -> None:
    out = TOOL.apply(photo(), {"code": "print('size', image.size)\nresult_image = image"})
    assert out.text == "size (96, 64)\n"


def test_long_printed_text_is_truncated() -> None:
    out = TOOL.apply(photo(), {"code": "print('x' * 10000)\nresult_image = image"})
    assert out.text is not None and len(out.text) < 2100 and "more characters cut" in out.text


def test_the_same_call_twice_gives_the_same_pixels_even_with_randomness() -> None:
    code = ("import random\nnoise = np.random.randint(0, 40, (image.height, image.width, 3))\n"
            "a = np.asarray(image, dtype=np.int32) + noise + random.randint(0, 9)\n"
            "result_image = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))")
    first, second = (TOOL.apply(photo(), {"code": code}) for _ in range(2))
    assert pixel_sha256(first.image) == pixel_sha256(second.image)
    assert pixel_sha256(first.image) != pixel_sha256(photo())


def test_palette_results_come_back_as_rgb_and_grayscale_stays_grayscale() -> None:
    assert TOOL.apply(photo(), {"code": "result_image = image.convert('P')"}).image.mode == "RGB"
    assert TOOL.apply(photo(), {"code": "result_image = image.convert('L')"}).image.mode == "L"
    rgba = TOOL.apply(photo(), {"code": "result_image = image.convert('RGBA')"}).image
    assert rgba.mode == "RGBA"


@pytest.mark.parametrize("code, message", [
    ("x = 1", "did not set result_image"),
    ("result_image = 'a picture'", "must be a PIL.Image.Image, got str"),
    ("y = 1\nfor x in\n", "SyntaxError: invalid syntax (line 2"),
    ("a = 1\nb = a / 0\nresult_image = image", "ZeroDivisionError: division by zero (line 2)"),
    ("import sys\nsys.exit(3)", "SystemExit: 3"),
], ids=["missing", "not an image", "syntax", "exception", "exit"])
def test_code_errors_reach_the_teacher_as_tool_errors(code: str, message: str) -> None:
    with pytest.raises(ToolError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TOOL.apply(photo(), {"code": code})


def test_output_printed_before_an_error_is_part_of_the_error() -> None:
    with pytest.raises(ToolError, match="printed before the error:\nstep 1"):
        TOOL.apply(photo(), {"code": "print('step 1')\nraise ValueError('bad crop')"})


@pytest.mark.parametrize("arguments", [{}, {"code": ""}, {"code": 42}])
def test_code_must_be_a_non_empty_string(arguments: dict[str, object]) -> None:
    with pytest.raises(ToolError, match="code must be a non-empty string"):
        TOOL.apply(photo(), arguments)


def test_the_registry_builds_the_tool_with_the_configured_timeout() -> None:
    tools = build_tools(ToolsConfig(enabled=("python_code_tool",), code_timeout_s=3.0))
    tool = tools["python_code_tool"]
    assert isinstance(tool, PythonCodeTool) and tool.timeout_s == 3.0
    assert tool.parameters["required"] == ["code"] and "image_index" in tool.parameters["properties"]
    for name in ("image", "result_image", "ImageOps", "ImageEnhance", "ImageFilter", "ImageDraw", "np", "math"):
        assert f"`{name}`" in tool.description


def test_concurrent_calls_from_asyncio_threads_all_succeed_and_agree() -> None:
    code = "result_image = ImageOps.equalize(image)"

    async def many() -> list[str]:
        outs = await asyncio.gather(*(asyncio.to_thread(TOOL.apply, photo(), {"code": code}) for _ in range(6)))
        return [pixel_sha256(o.image) for o in outs]

    assert set(asyncio.run(many())) == {pixel_sha256(in_process(code, photo()))}


def test_sandbox_check_names_every_layer_with_its_state() -> None:
    report = sandbox.sandbox_check()
    names = [layer.name for layer in report.layers]
    for expected in ("clean_process", "uid_drop", "rlimits", "landlock", "seccomp", "wall_clock_deadline",
                     "result_validation"):
        assert expected in names
    assert all(isinstance(layer.active, bool) and layer.detail for layer in report.layers)
    assert str(report).count("\n") >= len(names)


def test_run_code_refuses_when_a_layer_is_missing_unless_weak_isolation_is_accepted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox.sandbox_check()  # the pool is running
    weak = SandboxReport([Layer("landlock", False, "not available: test")], allow_weak=False)
    monkeypatch.setattr(sandbox._state, "report", weak)
    with pytest.raises(SandboxError, match="landlock.*GEODISTIL_SANDBOX_ALLOW_WEAK"):
        sandbox.run_code("result_image = image", photo())
    monkeypatch.setattr(sandbox._state, "report", SandboxReport(weak.layers, allow_weak=True))
    assert sandbox.run_code("result_image = image", photo()).ok


def test_a_child_that_refused_to_run_raises_sandbox_error() -> None:
    refused = Result(STATUS_REFUSED, 0, "", "sandbox layers unavailable, code not run (landlock: missing)")
    reply = Reply(1, VERDICT_RESULT, 0, 0.01, encode_result(refused))
    with pytest.raises(SandboxError, match="landlock: missing"):
        interpret(reply, memoryview(b""), timeout_s=1, memory_bytes=1 << 30, allow_weak=False)


def test_the_sandbox_exports_its_public_api_and_nothing_else() -> None:
    assert set(sandbox.__all__) == {"Layer", "SandboxError", "SandboxReport", "SandboxResult", "SandboxSettings",
                                    "configure", "run_code", "sandbox_check", "shutdown"}
    assert {"ok", "image", "stdout", "error"} <= set(sandbox.SandboxResult.__dataclass_fields__)
