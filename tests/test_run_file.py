"""``geodistil run``'s settings: the run file, the flags over it, the models' defaults under both."""

import subprocess
import sys

import pytest

from geodistil.cli.runfile import run_params
from geodistil.config import GenerationConfig, ImageConfig
from geodistil.errors import ConfigError

RUN_FILE = """
dataset: data/demo
output: out/run1
samples: {start: 10, num_samples: 50}
teacher: {base_url: "http://gpu:8000/v1", model: Qwen/Qwen2.5-VL-7B-Instruct, profile: vllm}
generation:
  max_tokens: 1024
  temperature: 0.2
  chat_template_kwargs: {enable_thinking: false}
image: {max_pixels: 1003520, image_format: png}
tools: {enabled: [image_zoom_in_tool], max_images: 8}
chunk_size: 500
"""


@pytest.fixture
def run_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(RUN_FILE)
    return path


def test_the_run_file_sets_every_section(run_file):
    params = run_params(run_file, {})
    assert params["dataset"].path == "data/demo" and params["storage"].url == "out/run1"
    assert (params["samples"].start, params["samples"].num_samples) == (10, 50)
    assert params["teacher"].profile == "vllm" and params["teacher"].model == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert params["generation"].chat_template_kwargs == {"enable_thinking": False}
    assert params["image"].image_format == "png" and params["tools"].max_images == 8
    assert params["chunk_size"] == 500


def test_a_flag_wins_over_the_run_file(run_file):
    params = run_params(run_file, {"generation.max_tokens": 64, "image.jpeg_quality": 80, "teacher.model": None})
    assert params["generation"].max_tokens == 64
    assert params["generation"].temperature == 0.2  # from the file: the flag was not given
    assert params["image"].jpeg_quality == 80 and params["teacher"].model == "Qwen/Qwen2.5-VL-7B-Instruct"


def test_a_setting_given_nowhere_takes_the_models_default():
    params = run_params(None, {"dataset": "d"})
    assert params["generation"] == GenerationConfig() and params["image"] == ImageConfig()


def test_an_unknown_setting_in_the_run_file_is_named(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("dataset: d\nmax_tokenz: 5\n")
    with pytest.raises(ConfigError, match="unknown setting 'max_tokenz'"):
        run_params(path, {})


def test_a_bad_value_is_named_in_one_line(run_file):
    with pytest.raises(ConfigError) as caught:
        run_params(run_file, {"generation.max_tokens": 0})
    assert str(caught.value).startswith("generation.max_tokens: ") and "\n" not in str(caught.value)


def test_a_literal_secret_header_reaches_the_environment_but_no_parameter(monkeypatch):
    monkeypatch.setenv("GEODISTIL_HEADER_X_API_KEY", "")  # restored (removed) after the test
    params = run_params(None, {"dataset": "d", "teacher.headers": {"X-Api-Key": "s3cr3t", "X-Route": "eu"}})
    teacher = params["teacher"]
    assert "s3cr3t" not in teacher.model_dump_json()
    assert teacher.headers["X-Route"] == "eu"
    assert teacher.resolved_headers()["X-Api-Key"] == "s3cr3t"


def test_a_secret_in_extra_body_reaches_the_request_but_no_parameter(monkeypatch):
    monkeypatch.setenv("GEODISTIL_BODY_API_KEY", "")  # restored (removed) after the test
    params = run_params(None, {"dataset": "d", "teacher.extra_body": {"api_key": "s3cr3t", "max_tokens": 5}})
    teacher = params["teacher"]
    assert "s3cr3t" not in teacher.model_dump_json() and teacher.extra_body["max_tokens"] == 5
    assert teacher.resolved_extra_body() == {"api_key": "s3cr3t", "max_tokens": 5}


def test_the_cli_names_a_bad_run_file_in_one_line_without_a_traceback(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("dataset: d\ngeneration: {max_tokens: many}\n")
    result = subprocess.run([sys.executable, "-m", "geodistil.cli", "run", "--config", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout.strip().startswith("generation.max_tokens: ")
    assert len(result.stdout.strip().splitlines()) == 1
