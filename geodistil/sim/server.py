"""The simulated teacher over HTTP: an OpenAI-compatible server for tests, demos and load tests.

Routes: ``GET /v1/models``, ``POST /v1/chat/completions`` (OpenAI response shape, with
``usage``), ``GET /props`` (llama.cpp's) and ``GET /sim/stats``, JSON counters: ``requests``
(every chat-completion request received), then by outcome ``429`` (of which ``rate_limited`` by
the sim's own limiter, see ``geodistil.sim.limits``), ``500``, ``hang``,
``bad_request``, the 4xx of the emulated server (``refused_param``, ``context_length``,
``image_limit``, ``unauthorized``, ``unknown_model``; see ``geodistil.sim.emulation``), ``disconnected`` and
``ok`` (a 200 answer), which is one of ``tool_calls``, ``answers`` (a boxed answer),
``malformed`` or ``no_box``; plus ``in_flight``, ``max_in_flight``, and ``first_request_at``/``last_request_at`` (Unix time of the first and last chat request, for benchmarks). Faults (429 with ``Retry-After``, 500, hangs, malformed tool calls,
answers without a box) are drawn per request from one ``random.Random(seed)`` that is
stateful on purpose; the content of an answer is not, see ``geodistil.sim.policy``.

Per-request work is a JSON parse, a header-only image read and a few cached lookups, so
one process on two cores carries about a thousand concurrent requests with seconds of
simulated latency; the access log is off for the same reason.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import re
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from geodistil import geo
from geodistil.sim.config import SimConfig
from geodistil.dialects import ALIASES, DIALECTS, dialect_named
from geodistil.sim.emulation import EMULATIONS
from geodistil.sim.limits import RateLimiter
from geodistil.sim.net import free_port, stop_process, wait_http
from geodistil.sim.policy import Reply, message, respond
from geodistil.sim.reading import Conversation, read_request

__all__ = ["SimConfig", "SimServer", "create_app", "serve", "main", "SIM_MODEL", "RETRY_AFTER_S"]

SIM_MODEL = "geodistil-sim"
RETRY_AFTER_S = 1
IMAGE_TOKENS = 1000  # about what a 1024x768 image costs a Qwen2.5-VL (28 px patches)
HANG_MAX_S = 3600.0
_HANG_POLL_S = 0.5
_DATA_URL = re.compile(rb"data:image/[a-z]+;base64,[A-Za-z0-9+/=]*")
STAT_KEYS = ("requests", "ok", "429", "500", "hang", "malformed", "no_box", "tool_calls", "answers",
             "bad_request", "refused_param", "context_length", "image_limit", "unauthorized", "unknown_model", "rate_limited",
             "disconnected", "in_flight", "max_in_flight")


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status, headers=headers)


async def _drain(request: Request) -> None:
    """Read and drop the body (``request.body()`` would keep it alive for the whole hang)."""
    async for _ in request.stream():
        pass


class _Sim:
    """The app's state: config, the fault generator and the counters (one event loop, no locks)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.faults = random.Random(config.seed)
        self.stats = dict.fromkeys(STAT_KEYS, 0)
        self.first_request_at: float | None = None
        self.last_request_at: float | None = None
        self.emulation = EMULATIONS[config.profile]
        self.limiter = (RateLimiter(config.rpm_limit, config.tpm_limit, config.announce_limits, config.retry_after,
                                    SIM_MODEL) if config.rpm_limit or config.tpm_limit else None)

    def _unauthorized(self, request: Request) -> JSONResponse | None:
        """The emulated server's answer to a wrong or missing key (its key middleware guards every route of /v1)."""
        c = self.config
        if c.api_key is None or request.headers.get("authorization") == f"Bearer {c.api_key}":
            return None
        status, refusal = self.emulation.auth_error()
        return JSONResponse(refusal, status)

    async def models(self, request: Request) -> JSONResponse:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        entry = self.emulation.model_entry(SIM_MODEL, self.config.max_context_tokens)
        return JSONResponse({"object": "list", "data": [entry]})

    async def props(self, request: Request) -> JSONResponse:
        if self.config.profile != "llama-cpp":
            return JSONResponse({"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}, 404)
        return JSONResponse({"default_generation_settings": {"n_ctx": self.config.max_context_tokens or 4096},
                             "model_path": f"/models/{SIM_MODEL}.gguf"})

    async def stats_route(self, request: Request) -> JSONResponse:
        # when the first and the last chat request arrived (Unix time; benchmarks: time to first request)
        return JSONResponse({**self.stats, "first_request_at": self.first_request_at,
                             "last_request_at": self.last_request_at})

    async def chat(self, request: Request) -> Response:
        s = self.stats
        self.last_request_at = time.time()
        self.first_request_at = self.first_request_at or self.last_request_at
        s["requests"] += 1
        s["in_flight"] += 1
        s["max_in_flight"] = max(s["max_in_flight"], s["in_flight"])
        try:
            return await self._chat(request)
        except ClientDisconnect:  # the client gave up while sending: nobody to answer
            s["disconnected"] += 1
            return Response(status_code=499)
        finally:
            s["in_flight"] -= 1

    async def _chat(self, request: Request) -> Response:
        c, s = self.config, self.stats
        # always four draws, so the fault sequence depends only on the order requests arrive in
        fault, spread, u_malformed, u_no_box = (self.faults.random() for _ in range(4))
        if fault < c.rate_429:  # a gateway refuses at once, before any model time
            await _drain(request)
            s["429"] += 1
            retry_after = c.retry_after if c.retry_after is not None else RETRY_AFTER_S
            return _error(429, "simulated rate limit", "rate_limit_exceeded", {"Retry-After": f"{retry_after:g}"})
        if fault < c.rate_429 + c.rate_hang:
            s["hang"] += 1
            await _drain(request)
            deadline = time.monotonic() + HANG_MAX_S
            while time.monotonic() < deadline and not await request.is_disconnected():
                await asyncio.sleep(_HANG_POLL_S)
            return Response(status_code=504)
        raw = await request.body()
        if self.limiter is not None and (over := self.limiter.refusal(_raw_tokens(raw))) is not None:
            s["429"] += 1
            s["rate_limited"] += 1
            return JSONResponse(over[0], 429, headers=over[1])
        delay = c.latency + spread * c.latency_spread
        if delay > 0:
            await asyncio.sleep(delay)
        if fault < c.rate_429 + c.rate_hang + c.rate_500:
            s["500"] += 1
            return _error(500, "simulated server error", "server_error")
        if (refused := self._unauthorized(request)) is not None:
            s["unauthorized"] += 1
            return refused
        try:
            body = json.loads(raw)
            if isinstance(body, dict) and body.get("stream"):
                raise ValueError("the simulated teacher does not stream; send stream=false")
            conv = read_request(body)
        except ValueError as exc:
            s["bad_request"] += 1
            return _error(400, str(exc), "invalid_request_error")
        refused = self._unknown_model(body) or self._refusal(body, conv)
        if refused is not None:
            return refused
        reply = respond(conv, c.seed, tool_calls=c.tool_calls, malformed=u_malformed < c.rate_malformed,
                        no_box=u_no_box < c.rate_no_box)
        s["ok"] += 1
        s[reply.outcome] += 1
        return JSONResponse(self._completion(body, conv, reply),
                            headers=self.limiter.headers() if self.limiter is not None else None)

    def _unknown_model(self, body: dict[str, Any]) -> JSONResponse | None:
        """OpenAI's 404 for a model it does not serve, when ``known_models_only`` says to check."""
        model = body.get("model")
        if not self.config.known_models_only or model == SIM_MODEL:
            return None
        self.stats["unknown_model"] += 1
        return JSONResponse({"error": {
            "message": f"The model `{model}` does not exist or you do not have access to it.",
            "type": "invalid_request_error", "param": None, "code": "model_not_found"}}, 404)

    def _refusal(self, body: dict[str, Any], conv: Conversation) -> JSONResponse | None:
        """The emulated server's 400 for this request (a refused parameter, a limit), if any."""
        c, s, e = self.config, self.stats, self.emulation
        refusal = e.refusal(body)
        if refusal is not None:
            s["refused_param"] += 1
            return JSONResponse(refusal, 400)
        if c.max_images_per_prompt is not None and len(conv.image_urls) > c.max_images_per_prompt:
            s["image_limit"] += 1
            return JSONResponse(e.image_error(len(conv.image_urls), c.max_images_per_prompt), 400)
        if c.max_context_tokens is not None:
            prompt = _prompt_tokens(conv)
            requested = body.get("max_completion_tokens") or body.get("max_tokens") or 0
            completion = int(requested) if e.counts_completion() and isinstance(requested, int) else 0
            if prompt + completion > c.max_context_tokens:
                s["context_length"] += 1
                return JSONResponse(e.context_error(prompt, completion, c.max_context_tokens), 400)
        return None

    def _completion(self, body: dict[str, Any], conv: Conversation, reply: Reply) -> dict[str, Any]:
        answer, finish = message(reply, dialect_named(self.config.tool_style), bool(body.get("tools")),
                                 think=self.config.think)
        if self.config.reasoning and self.emulation.reasoning_field:
            answer[self.emulation.reasoning_field] = f"The photo needs a close look. {reply.content.splitlines()[0]}"
        completion_chars = len(answer["content"] or "") + sum(len(c.arguments_json) for c in reply.calls)
        prompt_tokens = _prompt_tokens(conv)
        completion_tokens = completion_chars // 4 + 1
        return {
            "id": f"chatcmpl-sim-{conv.key(self.config.seed, 'id', conv.assistant_turns):016x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or SIM_MODEL,
            "choices": [{"index": 0, "message": answer, "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }


def _raw_tokens(raw: bytes) -> float:
    """A request's tokens for the limiter, from its bytes: four characters a token, ``IMAGE_TOKENS`` an image."""
    images = _DATA_URL.findall(raw)
    return (len(raw) - sum(map(len, images))) / 4 + IMAGE_TOKENS * len(images)


def _prompt_tokens(conv: Conversation) -> int:
    return conv.prompt_chars // 4 + IMAGE_TOKENS * len(conv.image_urls)


def create_app(config: SimConfig) -> Starlette:
    """The Starlette app; loads the gazetteer now so the first request does not pay for it."""
    geo.gazetteer()
    sim = _Sim(config)
    app = Starlette(routes=[
        Route("/v1/models", sim.models, methods=["GET"]),
        Route("/v1/chat/completions", sim.chat, methods=["POST"]),
        Route("/props", sim.props, methods=["GET"]),
        Route("/sim/stats", sim.stats_route, methods=["GET"]),
    ])
    app.state.sim = sim
    return app


def _uvicorn_config(config: SimConfig, log_level: str, app: Starlette | None = None) -> Any:
    import uvicorn

    # a hung request must not hold up shutdown for an hour: cancel it after 1 s. Keep-alive
    # outlasts httpx's 5 s pool expiry, so the client always closes an idle connection first
    # and never sends a request into one the server is closing.
    return uvicorn.Config(app or create_app(config), host=config.host, port=config.port, log_level=log_level,
                          access_log=False, lifespan="off", timeout_graceful_shutdown=1, timeout_keep_alive=30)


def serve(config: SimConfig, log_level: str = "info") -> None:
    """Serve the simulated teacher, an OpenAI-compatible test and demo fixture (not a model).

    It answers from the clues in the prompt and an offline gazetteer, calls the image tools
    on some turns, and injects latency and faults as configured. Blocks until interrupted.
    """
    import uvicorn

    server = uvicorn.Server(_uvicorn_config(config, log_level))
    # the gazetteer's ~100k long-lived objects would otherwise be rescanned by every full
    # collection (a stall of 0.1-0.3 s for all in-flight requests); this process is ours to tune
    gc.freeze()
    server.run()


class SimServer:
    """A running simulated teacher for tests and benchmarks: ``with SimServer(cfg) as sim: sim.base_url``.

    By default uvicorn runs in a background thread of this process, on a socket bound before
    start (port 0 gives a free port, no race). ``subprocess=True`` runs it in its own Python
    process instead, so a load test measures the client without the server's CPU in its GIL.
    """

    def __init__(self, config: SimConfig | None = None, *, subprocess: bool = False,
                 startup_timeout_s: float = 60.0) -> None:
        self.config = config or SimConfig(port=0)
        self.in_subprocess = subprocess
        self.startup_timeout_s = startup_timeout_s
        self.port: int | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._process: Any = None
        self._app: Starlette | None = None  # kept across an outage, and so are its counters

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the simulated teacher is not running")
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "", "::") else self.config.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ending in ``/v1``."""
        return f"{self.url}/v1"

    def stats(self) -> dict[str, int]:
        import httpx

        return dict(httpx.get(f"{self.url}/sim/stats", timeout=10).json())

    def start(self) -> SimServer:
        if self.in_subprocess:
            self._start_process()
        else:
            self._start_thread()
        return self

    def _start_thread(self) -> None:
        import uvicorn

        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        # proto must be named: asyncio sets TCP_NODELAY on accepted sockets only when it is
        # IPPROTO_TCP, and without it every response waits ~40 ms for a delayed ACK
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((self.config.host, self.port or self.config.port))
        self.port = int(self._socket.getsockname()[1])
        self._app = self._app or create_app(self.config)
        self._server = uvicorn.Server(_uvicorn_config(self.config, "warning", self._app))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="geodistil-sim", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the simulated teacher did not start")
            time.sleep(0.01)

    def refuse_connections(self, seconds: float) -> None:
        """An outage: the listening socket is closed (connections are refused) for ``seconds``, then
        the same app, counters included, listens again on the same port. Blocks for the outage;
        in-process servers only."""
        if self.in_subprocess:
            raise RuntimeError("an outage on demand needs the in-process simulated teacher")
        port = self.port
        self._stop_thread()
        time.sleep(seconds)
        self.port = port
        self._start_thread()

    def _start_process(self) -> None:
        self.port = self.config.port or free_port(self.config.host)
        args = self.config.model_copy(update={"port": self.port}).model_dump()
        argv = [f"--{k.replace('_', '-')}={v}" for k, v in args.items() if v is not None]
        self._process = subprocess.Popen([sys.executable, "-m", "geodistil.sim", *argv, "--log-level=warning"],
                                         stdout=subprocess.DEVNULL)
        try:
            wait_http(f"{self.base_url}/models", self.startup_timeout_s, self._process)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError("the simulated teacher process did not start") from exc

    def _stop_thread(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout=5)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def stop(self) -> None:
        self._stop_thread()
        if self._process is not None:
            stop_process(self._process)
        self._process = None

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _boolean(value: str) -> bool:
    """``--think=False`` (as ``SimServer`` passes a config to its process) is false, unlike ``bool("False")``."""
    if value.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    return value.lower() == "true"


_ARG_TYPES: dict[str, Any] = {"profile": str, "api_key": str, "tool_style": str, "rpm_limit": float,
                              "tpm_limit": float, "retry_after": float}


def main(argv: list[str] | None = None) -> None:
    """``python -m geodistil.sim``: the flags are the ``SimConfig`` fields (``--rate-429`` ...)."""
    parser = argparse.ArgumentParser(prog="python -m geodistil.sim", description=serve.__doc__)
    for name, field in SimConfig.model_fields.items():
        kind = _ARG_TYPES.get(name) or (int if field.default is None else type(field.default))  # None: unset
        kind = _boolean if kind is bool else kind
        default = None if name == "tool_style" else field.default  # unset: the profile's
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default, help=field.description,
                            choices=(*DIALECTS, *ALIASES) if name == "tool_style" else None)
    parser.add_argument("--log-level", default="info")
    options = vars(parser.parse_args(argv))
    log_level = options.pop("log_level")
    serve(SimConfig(**options), log_level=log_level)
