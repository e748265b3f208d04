"""Server profiles: which request parameters a teacher's server takes, and under which names.

A profile is declarative: the name of the max-tokens parameter, whether sampling parameters
are sent, which optional parameters go into the body (and renamed how), and the tool-call
dialect the server's usual models speak. ``auto`` infers the profile from the model name,
the base URL and what ``/v1/models`` says about the server.

Sources: OpenAI's reasoning guide (o-series and gpt-5 take ``max_completion_tokens`` and
``reasoning_effort``, reject ``max_tokens`` and a non-default ``temperature`` / ``top_p``);
vLLM's ``ChatCompletionRequest`` (``top_k``, ``repetition_penalty``, ``chat_template_kwargs``,
``mm_processor_kwargs``; ``owned_by: "vllm"`` and ``max_model_len`` in ``/v1/models``);
SGLang's ``ChatCompletionRequest`` (the same extras, ``owned_by: "sglang"``); llama.cpp's
server README (``top_k``, ``repeat_penalty``, ``chat_template_kwargs``; ``owned_by: "llamacpp"``);
Gemini's OpenAI-compatibility page (``max_tokens``, ``temperature``, ``top_p``, ``seed``,
``reasoning_effort``; anything else through ``extra_body``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlparse

ProfileName = Literal["vllm", "sglang", "openai", "openai-reasoning", "gemini", "llama-cpp"]
PROFILE_CHOICES = ("auto", "vllm", "sglang", "openai", "openai-reasoning", "gemini", "llama-cpp")

# the optional generation settings a profile may take, by their GenerationConfig names
OPTIONAL = ("top_k", "repetition_penalty", "reasoning_effort", "chat_template_kwargs", "mm_processor_kwargs")


@dataclass(frozen=True)
class ServerProfile:
    name: ProfileName
    dialect: str  # the tool-call dialect its models speak unless --tool-style says otherwise
    max_tokens_param: str = "max_tokens"
    sampling: bool = True  # sends temperature and top_p
    # optional settings it takes, mapped to the body's parameter name
    optional: dict[str, str] = field(default_factory=dict)

    def params(self, *, max_tokens: int, temperature: float, top_p: float, seed: int | None,
               optional: dict[str, Any]) -> dict[str, Any]:
        """The request's parameters (not model, messages, tools) for these settings."""
        params: dict[str, Any] = {self.max_tokens_param: max_tokens}
        if self.sampling:
            params.update(temperature=temperature, top_p=top_p)
        if seed is not None:
            params["seed"] = seed
        for name, value in optional.items():
            if value is not None:
                params[self.optional[name]] = value
        return params

    def refused(self, optional: dict[str, Any]) -> list[str]:
        """The optional settings given a value that this server does not take."""
        return [name for name, value in optional.items() if value is not None and name not in self.optional]


_VLLM_EXTRAS = {name: name for name in ("top_k", "repetition_penalty", "chat_template_kwargs", "mm_processor_kwargs")}

PROFILES: dict[str, ServerProfile] = {p.name: p for p in (
    ServerProfile("vllm", "hermes", optional={**_VLLM_EXTRAS, "reasoning_effort": "reasoning_effort"}),
    ServerProfile("sglang", "hermes", optional={**_VLLM_EXTRAS, "reasoning_effort": "reasoning_effort"}),
    ServerProfile("openai", "native"),
    ServerProfile("openai-reasoning", "native", max_tokens_param="max_completion_tokens", sampling=False,
                  optional={"reasoning_effort": "reasoning_effort"}),
    ServerProfile("gemini", "native", optional={"reasoning_effort": "reasoning_effort"}),
    ServerProfile("llama-cpp", "hermes", optional={"top_k": "top_k", "repetition_penalty": "repeat_penalty",
                                                  "chat_template_kwargs": "chat_template_kwargs"}),
)}

_REASONING_MODEL = re.compile(r"^(?:.*/)?(?:o\d(?:-mini|-pro)?|gpt-5[\w.-]*)(?:$|-)", re.IGNORECASE)
_OWNERS = {"vllm": "vllm", "sglang": "sglang", "llamacpp": "llama-cpp", "google": "gemini"}


@dataclass(frozen=True)
class Inference:
    profile: ServerProfile
    why: str


def _listed(listing: dict[str, Any] | None, model: str) -> dict[str, Any] | None:
    models = listing.get("data") if isinstance(listing, dict) else None
    entries = [m for m in models if isinstance(m, dict)] if isinstance(models, list) else []
    return next((m for m in entries if m.get("id") == model), entries[0] if entries else None)


def context_limit_in(listing: dict[str, Any] | None, model: str) -> int | None:
    """The context length a ``/v1/models`` entry announces (vLLM and SGLang: ``max_model_len``;
    llama.cpp: ``meta.n_ctx_train``, the model's, which the server's ``--ctx-size`` may lower)."""
    entry = _listed(listing, model) or {}
    meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
    value = entry.get("max_model_len") or meta.get("n_ctx_train")
    return int(value) if isinstance(value, int) and value > 0 else None


def by_name(model: str, base_url: str) -> Inference | None:
    """The profile that the model name or the host alone makes certain, else None."""
    host = urlparse(base_url).hostname or ""
    if _REASONING_MODEL.match(model):
        return Inference(PROFILES["openai-reasoning"], f"model name {model!r} is an OpenAI reasoning model")
    if host.endswith("generativelanguage.googleapis.com") or model.lower().removeprefix("models/").startswith("gemini"):
        return Inference(PROFILES["gemini"], "Gemini's OpenAI-compatible endpoint")
    if host == "api.openai.com" or model.lower().startswith(("gpt-4", "gpt-3.5", "chatgpt-")):
        return Inference(PROFILES["openai"], "the OpenAI API" if host == "api.openai.com"
                         else f"model name {model!r} is an OpenAI chat model")
    return None


def infer(model: str, base_url: str, listing: dict[str, Any] | None) -> Inference:
    """The profile for ``auto``: by name, else by who ``/v1/models`` says owns the model, else vLLM."""
    named = by_name(model, base_url)
    if named is not None:
        return named
    owner = str((_listed(listing, model) or {}).get("owned_by") or "")
    if owner in _OWNERS:
        return Inference(PROFILES[_OWNERS[owner]], f"/v1/models says owned_by {owner!r}")
    if owner in ("openai", "system"):
        return Inference(PROFILES["openai"], f"/v1/models says owned_by {owner!r}")
    # vLLM's parameters are the broadest common ground; a parameter a server refuses is corrected once
    return Inference(PROFILES["vllm"], f"unknown server (owned_by {owner or 'not given'}): vLLM's parameters")
