"""``geodistil check-api``: what is this endpoint, and how should geodistil talk to it?

One image request with the tools, after reading what the server says about itself, and a
report: the profile inferred (and why), whether the parameters were accepted or which the
server refused, the dialect the reply's tool calls came in, whether reasoning came back, the
context limit where the server tells it, and a one-line verdict with the flags to use.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from PIL import Image, ImageDraw

from geodistil import prompts, reasoning
from geodistil.config import GenerationConfig, TeacherConfig, ToolsConfig, redacted
from geodistil.dialects import ToolCall, dialect_named
from geodistil.errors import GeodistilError
from geodistil.images import image_data_url
from geodistil.profiles import context_limit_in
from geodistil.redact import redact_url
from geodistil.scoring import parse_answer
from geodistil.teacher import TeacherClient
from geodistil.tools import build_tools, openai_tool_specs


def _probe_image() -> Image.Image:
    image = Image.new("RGB", (640, 480), (135, 180, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 300, 640, 480), fill=(90, 140, 70))
    draw.rectangle((250, 180, 390, 240), fill=(20, 90, 40))
    draw.text((262, 200), "PARIS 12 km", fill=(255, 255, 255))
    return image


async def llama_cpp_context(base_url: str) -> int | None:
    """llama.cpp's ``/props`` (at the server's root, beside ``/v1``) says the context it was started with."""
    parts = urlsplit(base_url)
    root = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/").removesuffix("/v1"), "", ""))
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            props = (await http.get(f"{root}/props")).json()
        value = props["default_generation_settings"]["n_ctx"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    return int(value) if isinstance(value, int) else None


async def check_api(config: TeacherConfig, generation: GenerationConfig) -> dict[str, Any]:
    """Ask the server what it is, send one image request with the tools, and report what came back.

    ``config``'s retries and timeout apply as given: a check wants few retries, see the CLI.
    """
    model, tool_style = config.model, config.tool_style
    report: dict[str, Any] = {"base_url": redact_url(config.resolved_base_url()), "model": model, "ok": False}
    if config.headers:
        report["headers"] = redacted(config.headers)
    specs = openai_tool_specs(build_tools(ToolsConfig()))
    async with TeacherClient(config, max_connections=4) as client:
        try:
            listing = await client.models_listing()
            ids = [m.get("id") for m in listing.get("data") or [] if isinstance(m, dict)]
            report["models"] = ", ".join(map(str, ids[:10]))
            report["model_listed"] = model in ids
            server = await client.server_profile()
            assert client.inference is not None
            report["profile"] = f"{server.name} ({client.inference.why})"
            context = context_limit_in(listing, model)
            if server.name == "llama-cpp":
                context = await llama_cpp_context(config.resolved_base_url()) or context
            report["context_limit"] = context if context is not None else "not announced"
            style = tool_style or server.dialect
            dialect = dialect_named(style)
            messages = [
                {"role": "system", "content": prompts.SYSTEM_PROMPT},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": image_data_url(_probe_image())}},
                    {"type": "text",
                     "text": prompts.user_text("A road sign is visible.", dialect.prompt_block(specs))},
                ]},
            ]
            start = time.perf_counter()
            reply = await client.complete(messages, generation, tools=dialect.request_tools(specs))
        except GeodistilError as exc:
            report["error"] = str(exc)
            report["verdict"] = f"not usable: {exc}"
            return report
    thinking, content = reasoning.separate(reply.content, reply.reasoning)
    calls = dialect.read(content, reply.tool_calls, specs).calls
    corrections = client.corrections.notes
    report["latency_s"] = round(time.perf_counter() - start, 3)
    report["parameters"] = "accepted" if not corrections else "corrected: " + "; ".join(corrections)
    report["tool_style_sent"] = style
    report["reply_dialect"] = ", ".join(sorted({c.dialect for c in calls if c.dialect})) or "none"
    report["tool_call_format"] = bool(calls) and all(isinstance(c, ToolCall) for c in calls)
    report["tool_calls"] = ", ".join(getattr(c, "name", "?") or "?" for c in calls)
    report["reasoning_returned"] = bool(thinking)
    report["boxed_answer_parsed"] = parse_answer(content) is not None
    report["prompt_tokens"] = reply.usage.prompt_tokens
    report["completion_tokens"] = reply.usage.completion_tokens
    report["ok"] = report["tool_call_format"] or report["boxed_answer_parsed"]
    spoken = {c.dialect for c in calls if c.dialect}
    report["verdict"] = _verdict(report, config, server.name, style, spoken.pop() if len(spoken) == 1 else style)
    return report


def _verdict(report: dict[str, Any], config: TeacherConfig, profile: str, style: str, spoken: str) -> str:
    if not report["ok"]:
        return ("not usable yet: the reply had neither a tool call nor a \\boxed{} answer; try another "
                "--tool-style, or a model that follows tool prompts")
    if any("max_completion_tokens" in note for note in report["parameters"].split("; ")):
        profile = "openai-reasoning"  # the server wants OpenAI's reasoning-model parameters
    flags = f"--base-url {redact_url(config.resolved_base_url())} --model {config.model} --teacher-profile {profile}"
    # a model that answered in another dialect than the one offered: use what it speaks
    flags += f" --tool-style {spoken}"
    if config.api_key_env != "OPENAI_API_KEY":
        flags += f" --api-key-env {config.api_key_env}"
    if report["parameters"] != "accepted":
        flags += "  (the refused parameters are corrected automatically)"
    return f"usable: geodistil run {flags}"
