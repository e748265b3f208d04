"""Server profiles and 4xx answers, read offline: what is sent to each server, what each refusal means."""

import pytest

from geodistil.profiles import PROFILES, context_limit_in, infer
from geodistil.rejections import read_rejection


def params(profile: str, **optional):
    base = dict(top_k=None, repetition_penalty=None, reasoning_effort=None, chat_template_kwargs=None,
                mm_processor_kwargs=None)
    chosen = PROFILES[profile]
    wanted = {k: v for k, v in {**base, **optional}.items() if k in chosen.optional}
    return chosen.params(max_tokens=512, temperature=0.7, top_p=0.9, seed=3, optional=wanted)


def test_openai_reasoning_sends_max_completion_tokens_and_no_sampling_parameters():
    assert params("openai-reasoning", reasoning_effort="high") == {
        "max_completion_tokens": 512, "seed": 3, "reasoning_effort": "high"}


def test_vllm_takes_its_extras_in_the_body():
    sent = params("vllm", top_k=20, repetition_penalty=1.05, chat_template_kwargs={"enable_thinking": False},
                  mm_processor_kwargs={"max_pixels": 1003520})
    assert sent["top_k"] == 20 and sent["repetition_penalty"] == 1.05
    assert sent["chat_template_kwargs"] == {"enable_thinking": False}
    assert sent["mm_processor_kwargs"] == {"max_pixels": 1003520}
    assert sent["max_tokens"] == 512 and sent["temperature"] == 0.7


def test_llama_cpp_gets_repetition_penalty_under_its_own_name():
    assert params("llama-cpp", repetition_penalty=1.1)["repeat_penalty"] == 1.1


def test_a_profile_names_the_optional_settings_it_does_not_take():
    assert PROFILES["openai"].refused({"top_k": 20, "reasoning_effort": None}) == ["top_k"]


@pytest.mark.parametrize("model, base_url, listing, expected", [
    ("o3", "https://api.openai.com/v1", None, "openai-reasoning"),
    ("gpt-5-mini", "https://proxy.example/v1", None, "openai-reasoning"),
    ("gpt-4.1", "https://api.openai.com/v1", None, "openai"),
    ("gemini-2.5-flash", "https://generativelanguage.googleapis.com/v1beta/openai/", None, "gemini"),
    ("Qwen/Qwen2.5-VL-7B-Instruct", "http://gpu:8000/v1",
     {"data": [{"id": "Qwen/Qwen2.5-VL-7B-Instruct", "owned_by": "vllm", "max_model_len": 32768}]}, "vllm"),
    ("qwen", "http://gpu:30000/v1", {"data": [{"id": "qwen", "owned_by": "sglang"}]}, "sglang"),
    ("model.gguf", "http://localhost:8080/v1", {"data": [{"id": "model.gguf", "owned_by": "llamacpp"}]}, "llama-cpp"),
    ("something", "http://localhost:9000/v1", None, "vllm"),
])
def test_auto_infers_the_profile_from_name_url_and_model_listing(model, base_url, listing, expected):
    assert infer(model, base_url, listing).profile.name == expected


def test_the_context_limit_vllm_announces_is_read_from_its_model_listing():
    listing = {"data": [{"id": "q", "owned_by": "vllm", "max_model_len": 8192}]}
    assert context_limit_in(listing, "q") == 8192


@pytest.mark.parametrize("server, status, body", [
    ("openai", 400, {"error": {"message": "This model's maximum context length is 128000 tokens. However, your "
                               "messages resulted in 130000 tokens.", "type": "invalid_request_error",
                               "param": "messages", "code": "context_length_exceeded"}}),
    ("vllm", 400, {"object": "error", "type": "BadRequestError", "code": 400, "message":
                   "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens "
                   "(4000 in the messages, 1000 in the completion)."}),
    ("vllm decoder", 400, {"error": {"message": "The decoder prompt (length 5000) is longer than the maximum model "
                                     "length of 4096.", "type": "BadRequestError", "code": 400}}),
    ("sglang", 400, {"object": "error", "message": "Requested token count exceeds the model's maximum context "
                     "length of 4096 tokens.", "type": "BadRequestError", "code": 400}),
    ("sglang older", 400, {"object": "error", "message": "The input (5000 tokens) is longer than the model's "
                           "context length (4096 tokens).", "code": 400}),
    ("llama.cpp", 400, {"error": {"code": 400, "message": "the request exceeds the available context size, try "
                                  "increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": 5000,
                                  "n_ctx": 4096}}),
    ("gemini", 400, [{"error": {"code": 400, "message": "The input token count (1200000) exceeds the maximum "
                                "number of tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}}]),
    ("vllm max_tokens", 400, {"error": {"message": "'max_tokens' or 'max_completion_tokens' is too large: 2048. This "
                                        "model's maximum context length is 4096 tokens and your request has 3000 "
                                        "input tokens (2048 > 4096 - 3000). (parameter=max_tokens, value=2048)",
                                        "type": "BadRequestError", "param": "max_tokens", "code": 400}}),
    ("vllm renderer", 400, {"error": {"message": "You passed 5000 input tokens and requested 100 output tokens. "
                                      "However, the model's context length is only 4096 tokens, resulting in a "
                                      "maximum input length of 3996 tokens.", "type": "BadRequestError",
                                      "param": "input_tokens", "code": 400}}),
    ("llama.cpp unsplittable", 400, {"error": {"code": 400, "message": "input (5000 tokens) is larger than the max "
                                               "context size (4096 tokens). skipping"}}),
])
def test_every_servers_context_overflow_reads_as_context_length(server, status, body):
    assert read_rejection(status, body).kind == "context_length", server


@pytest.mark.parametrize("body", [
    {"error": {"message": "At most 1 image(s) may be provided in one prompt.", "type": "BadRequestError"}},
    {"object": "error", "message": "Image count 3 exceeds limit 2 per request.", "type": "BadRequestError"},
])
def test_vllms_and_sglangs_image_limits_read_as_image_limit(body):
    assert read_rejection(400, body).kind == "image_limit"


@pytest.mark.parametrize("body, kind, param", [
    ({"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                "'max_completion_tokens' instead.", "type": "invalid_request_error", "param": "max_tokens",
                "code": "unsupported_parameter"}}, "unsupported_parameter", "max_tokens"),
    ({"error": {"message": "Unsupported value: 'temperature' does not support 0.7 with this model. Only the "
                "default (1) value is supported.", "type": "invalid_request_error", "param": "temperature",
                "code": "unsupported_value"}}, "unsupported_value", "temperature"),
    ({"error": {"message": "Unrecognized request argument supplied: top_k", "type": "invalid_request_error",
                "param": None, "code": None}}, "unsupported_parameter", "top_k"),
    ([{"error": {"code": 400, "message": 'Invalid JSON payload received. Unknown name "top_k": Cannot find field.',
                 "status": "INVALID_ARGUMENT"}}], "unsupported_parameter", "top_k"),
])
def test_a_refused_parameter_is_named(body, kind, param):
    rejection = read_rejection(400, body)
    assert (rejection.kind, rejection.param) == (kind, param)


def test_401_reads_as_auth_whatever_the_body():
    assert read_rejection(401, {"error": "Unauthorized"}).kind == "auth"


def test_geminis_bad_key_reads_as_auth_though_it_is_a_400():
    body = [{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                       "status": "INVALID_ARGUMENT", "details": [{"reason": "API_KEY_INVALID"}]}}]
    assert read_rejection(400, body).kind == "auth"


def test_an_unknown_model_reads_as_not_found():
    assert read_rejection(404, {"error": {"message": "The model `x` does not exist."}}).kind == "not_found"
