"""``geodistil run`` against a real OpenAI-compatible server nobody here wrote: llama.cpp's, through
llama-cpp-python, serving a small text-only model (``tests/llama_server.py`` says which, and what it answers).

The conversation is made to outgrow the server's context on turn 2: the run must end every sample
as a scored trace with ``stop_reason="context_length"``, and running the same command again must
send the server nothing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from geodistil.config import GenerationConfig, ImageConfig, RolloutSettings, TeacherConfig
from geodistil.data import DatasetSpec
from geodistil.generate import generate
from geodistil.store import SampleRange, StorageSpec, TraceStore
from tests.llama_server import llama_server, missing

MISSING = missing()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]

SAMPLES = 4
CLUE = "A tram stop sign in German and a cathedral tower."
FILLER = " Paris is a city in France."  # 7 tokens with this model's tokenizer, however often repeated
N_CTX = 1024  # a multiple of 256: llama-cpp-python 0.3.36 answers a prompt over any other n_ctx with a 500
ROOM = range(6, 14)  # tokens left after the first prompt: 4 to answer in, too few for turn 2's reply and nudge
CHAT = "POST /v1/chat/completions"  # one line per request in the server's access log


def one_clue_dataset(root, clue: str) -> str:
    """Demo samples sharing one clue, so that every conversation's first prompt is the same length."""
    import datasets

    from geodistil.sim.demo_data import make_demo_dataset

    demo = datasets.load_from_disk(make_demo_dataset(str(root / f"demo-{len(clue)}"), n=SAMPLES, seed=3))
    path = str(root / f"clue-{len(clue)}")
    demo.map(lambda _: {"clues": clue}).save_to_disk(path)
    return path


def settings(base_url: str, model: str, **generation: int) -> RolloutSettings:
    return RolloutSettings(teacher=TeacherConfig(base_url=base_url, model=model, profile="llama-cpp", max_retries=0),
                           generation=GenerationConfig(**generation), image=ImageConfig(text_only=True))


def first_prompt_tokens(server, dataset: str, out: str) -> int:
    """The first turn's prompt, in the server's own tokens: one turn of one sample."""
    asyncio.run(generate(DatasetSpec(path=dataset), StorageSpec(url=out),
                         settings(server.base_url, server.model, max_turns=1, max_tokens=4),
                         SampleRange(num_samples=1)))
    (_, trace), = TraceStore(out).iter_traces()
    assert trace.ok and trace.usage.prompt_tokens > 0, trace.error
    return trace.usage.prompt_tokens


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    """A dataset whose first prompt leaves ``ROOM`` tokens of an ``N_CTX`` context, measured on the real server."""
    root = tmp_path_factory.mktemp("data")
    with llama_server(2 * N_CTX, root / "probe") as server:
        bare = first_prompt_tokens(server, one_clue_dataset(root, CLUE), str(root / "probe-bare"))
        fillers = max(0, -(-(N_CTX - ROOM.stop + 1 - bare) // 7))
        padded = one_clue_dataset(root, CLUE + FILLER * fillers)
        prompt = first_prompt_tokens(server, padded, str(root / "probe-padded"))
    assert N_CTX - prompt in ROOM, (bare, fillers, prompt)
    return padded


def geodistil_run(dataset: str, out: str, base_url: str, model: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return subprocess.run(
        [sys.executable, "-m", "geodistil.cli", "run", "--dataset", dataset, "--output", out,
         "--base-url", base_url, "--model", model, "--teacher-profile", "llama-cpp", "--text-only",
         "--max-tokens", "4", "--max-turns", "4", "--max-concurrency", "2"],
        capture_output=True, text=True, timeout=900, env=env)


def test_conversations_that_outgrow_a_real_servers_context_end_as_scored_traces_and_are_not_sent_again(
        dataset, tmp_path):
    out = str(tmp_path / "traces")
    with llama_server(N_CTX, tmp_path / "server") as server:
        log = tmp_path / "server" / "llama-server.log"
        first = geodistil_run(dataset, out, server.base_url, server.model)
        sent = log.read_text(errors="replace").count(CHAT)
        again = geodistil_run(dataset, out, server.base_url, server.model)
        sent_again = log.read_text(errors="replace").count(CHAT) - sent
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Traceback" not in first.stdout + first.stderr + again.stdout + again.stderr
    traces = [trace for _, trace in TraceStore(out).iter_traces()]
    assert len(traces) == SAMPLES
    for trace in traces:
        assert trace.stop_reason == "context_length" and trace.ok and trace.error is None
        assert trace.num_turns == 1 and trace.distance_km is not None  # scored from what turn 1 said
        assert trace.preprocess.sent_as == "not_sent" and trace.teacher.profile == "llama-cpp"
    # each sample: one answered request and the refused one, retried by nobody
    assert sent == sum(t.usage.requests for t in traces) == 2 * SAMPLES
    assert sent_again == 0
