"""The facts geodistil relies on, checked against llama.cpp's real server through the real ``openai`` client.

If llama-cpp-python changes what it answers, these fail before the teacher client's mapping silently stops
matching (``tests/llama_server.py`` records what it answers today).
"""

from __future__ import annotations

import openai
import pytest

from tests.llama_server import llama_server, missing

MISSING = missing()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]

N_CTX = 256
SENTENCE = "Paris is a city in France. "  # 7 tokens with this model's tokenizer
NEAR_THE_CONTEXT = SENTENCE * 31  # about 230 prompt tokens: little room left to generate, so the test is quick
OVER_THE_CONTEXT = SENTENCE * 80  # about 570


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with llama_server(N_CTX, tmp_path_factory.mktemp("llama")) as running:
        yield running


@pytest.fixture
def client(server):
    with openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def ask(client, server, content: str, **params):
    return client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": content}],
                                          **params)


def test_a_completion_stops_at_max_tokens_and_reports_its_usage(client, server):
    reply = ask(client, server, "Describe Paris in detail.", max_tokens=4, temperature=0)

    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 4
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 4


def test_a_prompt_over_the_context_is_a_400_context_length_exceeded(client, server):
    with pytest.raises(openai.BadRequestError) as raised:
        ask(client, server, OVER_THE_CONTEXT, max_tokens=4)

    error = raised.value
    assert error.status_code == 400
    assert error.code == "context_length_exceeded"
    assert error.type == "invalid_request_error"
    assert f"This model's maximum context length is {N_CTX} tokens" in error.message


def test_a_prompt_that_fits_with_too_many_max_tokens_is_cut_to_the_context_not_refused(client, server):
    reply = ask(client, server, NEAR_THE_CONTEXT, max_tokens=N_CTX, temperature=0)

    assert reply.usage.total_tokens <= N_CTX


def test_content_as_a_list_of_parts_is_a_500_so_a_text_only_teacher_needs_string_content(client, server):
    parts = [{"type": "text", "text": "Where was this photo taken?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": parts}],
                                       max_tokens=4)

    assert raised.value.status_code == 500
