"""Reading a teacher's 4xx answer: what was wrong with the request, whatever server said it.

Servers phrase the same problem differently and wrap it in different shapes, so this module
matches on meaning: OpenAI's ``code`` where a server sends one, else regular expressions over
the phrasings of the servers geodistil distils from (each pattern names its source).

Shapes read: OpenAI ``{"error": {"message", "type", "param", "code"}}`` (also vLLM >= 0.10,
llama.cpp, llama-cpp-python), the older vLLM / SGLang ``{"object": "error", "message", ...}``,
Gemini's list ``[{"error": {"code", "message", "status"}}]``, and plain text. The bodies
each server sends, with their sources, are collected in ``docs/teacher-errors.md``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

RejectionKind = Literal["context_length", "image_limit", "unsupported_parameter", "unsupported_value",
                        "auth", "not_found", "bad_request"]

_CONTEXT = [re.compile(p, re.IGNORECASE) for p in (
    r"maximum context length",  # OpenAI, vLLM, llama-cpp-python: "This model's maximum context length is N tokens"
    r"context[ _]length[ _]exceeded",  # OpenAI's code, as some proxies put it in the message
    r"longer than the (?:model's )?(?:maximum )?(?:context|model) length",  # SGLang; vLLM "maximum model length"
    r"exceeds? the available context size",  # llama.cpp server
    r"larger than the max context size",  # llama.cpp server, a batch it cannot split
    r"exceed_context_size_error",  # llama.cpp server's error type
    r"model's context length is only \d+",  # vLLM's renderer check (newer releases)
    r"input token count .*exceeds the maximum number of tokens",  # Gemini
    r"(?:prompt|input) is too long",  # Anthropic-style gateways, SGLang's "input length too long"
)]
_IMAGES = [re.compile(p, re.IGNORECASE) for p in (
    r"at most \d+ image\(s\) may be provided",  # vLLM --limit-mm-per-prompt
    r"image count \d+ exceeds limit",  # SGLang --limit-mm-data-per-request
    r"too many images",
)]
_AUTH = re.compile(r"API_KEY_INVALID|api key not valid|invalid api key|incorrect api key", re.IGNORECASE)
# an unsupported parameter named in the message, when no ``param`` field says it
_PARAM_IN_MESSAGE = [re.compile(p) for p in (
    r"Unsupported parameter: '(\w+)'",  # OpenAI (also in the message of code unsupported_parameter)
    r"Unrecognized request argument supplied: (\w+)",  # OpenAI, parameters it does not know at all
    r'Unknown name "(\w+)"',  # Gemini (Google's JSON-to-proto mapping)
)]
_VALUE_IN_MESSAGE = re.compile(r"Unsupported value: '(\w+)'")  # OpenAI: temperature on reasoning models


@dataclass(frozen=True)
class Rejection:
    kind: RejectionKind
    message: str
    param: str | None = None  # the request parameter to blame, for the unsupported kinds


def _error_fields(body: Any) -> tuple[str, str, str | None]:
    """(message, code-or-type, param) from any of the shapes in the module docstring; Gemini's
    ``details`` go into the code (its bad-key reason is only there)."""
    if isinstance(body, list) and body:
        body = body[0]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if not isinstance(body, dict):
        return (str(body) if body is not None else ""), "", None
    message = body.get("message")
    code = " ".join(str(body.get(k)) for k in ("code", "type", "status") if body.get(k) is not None)
    if body.get("details") is not None:
        code += " " + json.dumps(body["details"])
    param = body.get("param")
    return (message if isinstance(message, str) else json.dumps(body)), code, (param if isinstance(param, str) else None)


def read_rejection(status: int, body: Any) -> Rejection:
    """What a 4xx answer with this (parsed JSON, or text) body means."""
    message, code, param = _error_fields(body)
    text = f"{message} {code}"
    if status in (401, 403) or _AUTH.search(text):  # Gemini says a bad key with 400
        return Rejection("auth", message)
    if "context_length_exceeded" in code or any(p.search(text) for p in _CONTEXT):
        return Rejection("context_length", message)
    if any(p.search(message) for p in _IMAGES):
        return Rejection("image_limit", message)
    value = _VALUE_IN_MESSAGE.search(message)
    if "unsupported_value" in code or value:
        return Rejection("unsupported_value", message, param or (value.group(1) if value else None))
    named = next((m.group(1) for p in _PARAM_IN_MESSAGE if (m := p.search(message))), None)
    if "unsupported_parameter" in code or named:
        return Rejection("unsupported_parameter", message, param or named)
    if status == 404:
        return Rejection("not_found", message)
    return Rejection("bad_request", message)
