"""``geodistil check-api``: is this endpoint a teacher geodistil can use?"""

from __future__ import annotations

import time
from typing import Any

from PIL import Image, ImageDraw

from geodistil import prompts
from geodistil.config import GenerationConfig, TeacherConfig, ToolsConfig
from geodistil.errors import GeodistilError
from geodistil.images import image_data_url
from geodistil.redact import redact_url
from geodistil.scoring import parse_answer
from geodistil.teacher import TeacherClient
from geodistil.toolcalls import ToolCall, parse_native_tool_calls, parse_text_tool_calls
from geodistil.tools import build_tools, openai_tool_specs


def _probe_image() -> Image.Image:
    image = Image.new("RGB", (640, 480), (135, 180, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 300, 640, 480), fill=(90, 140, 70))
    draw.rectangle((250, 180, 390, 240), fill=(20, 90, 40))
    draw.text((262, 200), "PARIS 12 km", fill=(255, 255, 255))
    return image


async def check_api(base_url: str | None, model: str, tool_style: str = "text") -> dict[str, Any]:
    """List models, send one image request with the tools, and report what came back."""
    config = TeacherConfig(base_url=base_url, model=model, tool_style=tool_style, max_retries=1, timeout_s=120)
    report: dict[str, Any] = {"base_url": redact_url(config.resolved_base_url()), "model": model, "ok": False}
    specs = openai_tool_specs(build_tools(ToolsConfig()))
    async with TeacherClient(config, max_connections=4) as client:
        try:
            models = await client.list_models()
            report["models"] = ", ".join(models[:10])
            report["model_listed"] = model in models
            messages = [
                {"role": "system", "content": prompts.SYSTEM_PROMPT},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": image_data_url(_probe_image())}},
                    {"type": "text", "text": prompts.user_text("A road sign is visible.", specs, tool_style)},
                ]},
            ]
            start = time.perf_counter()
            reply = await client.complete(messages, GenerationConfig(max_tokens=1024),
                                          tools=specs if tool_style == "native" else None)
        except GeodistilError as exc:
            report["error"] = str(exc)
            return report
    calls = parse_native_tool_calls(reply.tool_calls) if reply.tool_calls else parse_text_tool_calls(reply.content)
    report["latency_s"] = round(time.perf_counter() - start, 3)
    report["tool_call_format"] = bool(calls) and all(isinstance(c, ToolCall) for c in calls)
    report["tool_calls"] = ", ".join(getattr(c, "name", "?") or "?" for c in calls)
    report["boxed_answer_parsed"] = parse_answer(reply.content) is not None
    report["prompt_tokens"] = reply.usage.prompt_tokens
    report["completion_tokens"] = reply.usage.completion_tokens
    report["ok"] = report["tool_call_format"] or report["boxed_answer_parsed"]
    return report
