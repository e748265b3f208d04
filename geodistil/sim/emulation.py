"""How the simulated teacher imitates a real server (``geodistil sim --profile ...``): a test fixture.

What each real server does, and where that behaviour comes from:

| profile | refuses (400, in its shape) | context limit message | images | reasoning field | ``/v1/models`` |
| --- | --- | --- | --- | --- | --- |
| ``vllm`` | nothing (unknown fields are ignored with a warning: ``vllm/entrypoints/openai/protocol.py``) | prompt alone: "This model's maximum context length is N tokens. However, your request has T input tokens. ..."; with the completion: "'max_tokens' or 'max_completion_tokens' is too large: M. ..." (``param: "max_tokens"``!), ``engine/serving.py`` ``_validate_input`` | "At most N image(s) may be provided in one prompt." (``--limit-mm-per-prompt``, the multimodal processor's ``validate_num_items``) | ``reasoning_content`` (``--reasoning-parser``) | ``owned_by: "vllm"``, ``max_model_len`` |
| ``sglang`` | nothing | "The input (T tokens) is longer than the model's context length (N tokens)." / "Requested token count exceeds the model's maximum context length of N tokens. ..." (``tokenizer_manager.py`` ``_validate_one_request``), flat ``{"object": "error", ...}`` | "Image count n exceeds limit L per request." (``--limit-mm-data-per-request``) | ``reasoning_content`` | ``owned_by: "sglang"``, ``max_model_len`` |
| ``openai`` | ``reasoning_effort`` (``unsupported_parameter``); vLLM's extras: "Unrecognized request argument supplied: top_k" | code ``context_length_exceeded``, "This model's maximum context length is N tokens. However, your messages resulted in M tokens." | no limit emulated | none in chat completions | ``owned_by: "system"`` |
| ``openai-reasoning`` | ``max_tokens`` (``unsupported_parameter``, "Use 'max_completion_tokens' instead."), ``temperature`` / ``top_p`` other than 1 (``unsupported_value``), vLLM's extras | as ``openai`` | no limit emulated | none (reasoning is hidden) | ``owned_by: "system"`` |
| ``gemini`` | vLLM's extras: 'Invalid JSON payload received. Unknown name "top_k"' (Google's list-wrapped error, ``status: INVALID_ARGUMENT``) | "The input token count (M) exceeds the maximum number of tokens allowed (N)." | no limit emulated | none | ``owned_by: "google"`` |
| ``llama-cpp`` | nothing (unknown fields are ignored: ``tools/server/README.md``) | type ``exceed_context_size_error``, "the request exceeds the available context size, try increasing it", with ``n_prompt_tokens`` and ``n_ctx`` | no limit emulated | ``reasoning_content`` (``--reasoning-format``) | ``owned_by: "llamacpp"``, ``meta.n_ctx_train``; ``/props`` has ``default_generation_settings.n_ctx`` |

A wrong key (``--api-key``) is answered as each server does: vLLM and SGLang 401
``{"error": "Unauthorized"}``, llama.cpp 401 ``authentication_error``, OpenAI 401
``invalid_api_key``, Gemini **400** with reason ``API_KEY_INVALID``. The OpenAI and Gemini
rows follow bodies users quoted from those closed servers; every body and its source is in
``docs/teacher-errors.md``. Without a profile the simulator accepts
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
        alone = prompt >= limit  # the prompt alone does not fit, whatever the completion
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
            message = (f"The input ({prompt} tokens) is longer than the model's context length ({limit} tokens)."
                       if alone else
                       f"Requested token count exceeds the model's maximum context length of {limit} tokens. You "
                       f"requested a total of {total} tokens: {prompt} tokens from the input messages and "
                       f"{completion} tokens for the completion. Please reduce the number of tokens in the input "
                       "messages or the completion to fit within the limit.")
            return {"object": "error", "type": "BadRequestError", "param": None, "code": 400, "message": message}
        if alone:
            return {"error": {"type": "BadRequestError", "param": "input_tokens", "code": 400, "message":
                              f"This model's maximum context length is {limit} tokens. However, your request has "
                              f"{prompt} input tokens. Please reduce the length of the input messages. "
                              f"(parameter=input_tokens, value={prompt})"}}
        return {"error": {"type": "BadRequestError", "param": "max_tokens", "code": 400, "message":
                          f"'max_tokens' or 'max_completion_tokens' is too large: {completion}. This model's "
                          f"maximum context length is {limit} tokens and your request has {prompt} input tokens "
                          f"({completion} > {limit} - {prompt}). (parameter=max_tokens, value={completion})"}}

    def image_error(self, count: int, limit: int) -> Any:
        if self.profile == "sglang":
            return {"object": "error", "type": "BadRequestError", "param": None, "code": 400,
                    "message": f"Image count {count} exceeds limit {limit} per request."}
        return {"error": {"type": "BadRequestError", "param": None, "code": 400,
                          "message": f"At most {limit} image(s) may be provided in one prompt."}}

    def auth_error(self) -> tuple[int, Any]:
        """Status and body for a wrong or missing key."""
        if self.profile in ("vllm", "sglang", None):
            return 401, {"error": "Unauthorized"}  # their --api-key middleware
        if self.profile == "llama-cpp":
            return 401, {"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}}
        if self.profile == "gemini":
            return 400, [{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                                    "status": "INVALID_ARGUMENT", "details": [
                                        {"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                         "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}}]
        return 401, _openai_error("Incorrect API key provided: wr***ng.", None, "invalid_api_key")

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
    Emulation("sglang", "sglang", "text", "reasoning_content", image_limit=True),
    Emulation("openai", "system", "native", None),
    Emulation("openai-reasoning", "system", "native", None),
    Emulation("gemini", "google", "native", None),
    Emulation("llama-cpp", "llamacpp", "text", "reasoning_content"),
)}
