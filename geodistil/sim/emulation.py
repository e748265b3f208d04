"""How the simulated teacher imitates a real server (``geodistil sim --profile ...``): a test fixture.

What each real server does, and where that behaviour comes from:

| profile | refuses (400, in its shape) | context limit message | images | reasoning field | ``/v1/models`` |
| --- | --- | --- | --- | --- | --- |
| ``vllm`` | nothing (unknown fields are ignored with a warning: ``vllm/entrypoints/openai/protocol.py``) | "This model's maximum context length is N tokens. However, you requested ..." (``serving_engine.py``) | "At most N image(s) may be provided in one prompt." (``--limit-mm-per-prompt``, ``entrypoints/chat_utils.py``) | ``reasoning_content`` (``--reasoning-parser``) | ``owned_by: "vllm"``, ``max_model_len`` |
| ``sglang`` | nothing | "Requested token count exceeds the model's maximum context length of N tokens. ..." (``serving_chat.py``), ``{"object": "error", ...}`` | no per-prompt limit | ``reasoning_content`` | ``owned_by: "sglang"``, ``max_model_len`` |
| ``openai`` | ``reasoning_effort`` (``unsupported_parameter``); vLLM's extras: "Unrecognized request argument supplied: top_k" | code ``context_length_exceeded``, "This model's maximum context length is N tokens. However, your messages resulted in M tokens." | no limit emulated | none in chat completions | ``owned_by: "system"`` |
| ``openai-reasoning`` | ``max_tokens`` (``unsupported_parameter``, "Use 'max_completion_tokens' instead."), ``temperature`` / ``top_p`` other than 1 (``unsupported_value``), vLLM's extras | as ``openai`` | no limit emulated | none (reasoning is hidden) | ``owned_by: "system"`` |
| ``gemini`` | vLLM's extras: 'Invalid JSON payload received. Unknown name "top_k"' (Google's list-wrapped error, ``status: INVALID_ARGUMENT``) | "The input token count (M) exceeds the maximum number of tokens allowed (N)." | no limit emulated | none | ``owned_by: "google"`` |
| ``llama-cpp`` | nothing (unknown fields are ignored: ``tools/server/README.md``) | type ``exceed_context_size_error``, "the request exceeds the available context size, try increasing it", with ``n_prompt_tokens`` and ``n_ctx`` | no limit emulated | ``reasoning_content`` (``--reasoning-format``) | ``owned_by: "llamacpp"``, ``meta.n_ctx_train``; ``/props`` has ``default_generation_settings.n_ctx`` |

The OpenAI rows follow the error bodies OpenAI's API returns (its reasoning guide and error
codes page); Gemini's its OpenAI-compatibility page. Without a profile the simulator accepts
everything and answers its limits in vLLM's words. Token counts are the simulator's own
estimate (characters / 4, ``IMAGE_TOKENS`` per image), as in its ``usage``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

VLLM_EXTRAS = ("top_k", "repetition_penalty", "repeat_penalty", "chat_template_kwargs", "mm_processor_kwargs")


def _openai_error(message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


@dataclass(frozen=True)
class Emulation:
    profile: str | None
    owned_by: str
    tool_style: str  # "text" or "native": the dialect its usual models answer in
    reasoning_field: str | None
    image_limit: bool = False  # the server has a per-prompt image limit

    def refusal(self, body: dict[str, Any]) -> Any | None:
        """The 400 body this server answers for a parameter it refuses, else None."""
        extras = [k for k in VLLM_EXTRAS if k in body]
        if self.profile == "openai-reasoning":
            if "max_tokens" in body:
                return _openai_error("Unsupported parameter: 'max_tokens' is not supported with this model. "
                                     "Use 'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter")
            for name in ("temperature", "top_p"):
                if name in body and body[name] != 1:
                    return _openai_error(f"Unsupported value: '{name}' does not support {body[name]} with this "
                                         "model. Only the default (1) value is supported.", name, "unsupported_value")
        if self.profile == "openai" and "reasoning_effort" in body:
            return _openai_error("Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                                 "reasoning_effort", "unsupported_parameter")
        if self.profile in ("openai", "openai-reasoning") and extras:
            return _openai_error(f"Unrecognized request argument supplied: {extras[0]}")
        if self.profile == "gemini" and extras:
            return [{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message":
                               f'Invalid JSON payload received. Unknown name "{extras[0]}": Cannot find field.'}}]
        return None

    def counts_completion(self) -> bool:
        """Whether the limit is checked against prompt + requested completion tokens (llama.cpp: the prompt)."""
        return self.profile != "llama-cpp"

    def context_error(self, prompt: int, completion: int, limit: int) -> Any:
        total = prompt + completion
        if self.profile in ("openai", "openai-reasoning"):
            return _openai_error(f"This model's maximum context length is {limit} tokens. However, your messages "
                                 f"resulted in {prompt} tokens. Please reduce the length of the messages.",
                                 "messages", "context_length_exceeded")
        if self.profile == "gemini":
            return [{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message":
                               f"The input token count ({prompt}) exceeds the maximum number of tokens allowed "
                               f"({limit})."}}]
        if self.profile == "llama-cpp":
            return {"error": {"code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": prompt,
                              "n_ctx": limit,
                              "message": "the request exceeds the available context size, try increasing it"}}
        if self.profile == "sglang":
            return {"object": "error", "type": "BadRequestError", "param": None, "code": 400, "message":
                    f"Requested token count exceeds the model's maximum context length of {limit} tokens. You "
                    f"requested a total of {total} tokens: {prompt} tokens from the input messages and "
                    f"{completion} tokens for the completion. Please reduce the number of tokens in the input "
                    "messages or the completion to fit within the limit."}
        return {"error": {"type": "BadRequestError", "param": None, "code": 400, "message":
                          f"This model's maximum context length is {limit} tokens. However, you requested {total} "
                          f"tokens ({prompt} in the messages, {completion} in the completion). Please reduce the "
                          "length of the messages or completion."}}

    def image_error(self, limit: int) -> Any:
        return {"error": {"type": "BadRequestError", "param": None, "code": 400,
                          "message": f"At most {limit} image(s) may be provided in one prompt."}}

    def auth_error(self) -> Any:
        if self.profile in ("vllm", "sglang", None):
            return {"error": "Unauthorized"}  # vLLM's --api-key middleware
        return _openai_error("Incorrect API key provided.", None, "invalid_api_key")

    def model_entry(self, model: str, context: int | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": model, "object": "model", "created": 0, "owned_by": self.owned_by}
        if self.profile in ("vllm", "sglang"):
            entry.update(root=model, max_model_len=context or 32768)
        if self.profile == "llama-cpp":
            entry["meta"] = {"n_ctx_train": context or 4096}
        return entry


EMULATIONS: dict[str | None, Emulation] = {e.profile: e for e in (
    Emulation(None, "geodistil-sim", "text", "reasoning_content", image_limit=True),
    Emulation("vllm", "vllm", "text", "reasoning_content", image_limit=True),
    Emulation("sglang", "sglang", "text", "reasoning_content"),
    Emulation("openai", "system", "native", None),
    Emulation("openai-reasoning", "system", "native", None),
    Emulation("gemini", "google", "native", None),
    Emulation("llama-cpp", "llamacpp", "text", "reasoning_content"),
)}
