import json
import subprocess
import sys

from tests.helpers import sim_process


def check_api(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geodistil.cli", "check-api", *args],
                          capture_output=True, text=True, timeout=120)


def test_check_api_reports_a_usable_teacher():
    with sim_process("--seed", "4") as url:
        result = check_api("--base-url", url, "--model", "sim")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "latency_s" in result.stdout and "boxed_answer_parsed" in result.stdout


def test_check_api_fails_clearly_when_nothing_answers():
    result = check_api("--base-url", "http://127.0.0.1:9/v1", "--model", "none")
    assert result.returncode == 1
    assert "error" in result.stdout


def test_check_api_tells_the_profile_context_limit_dialect_reasoning_and_the_flags_to_use():
    with sim_process("--profile", "vllm", "--max-context-tokens", "8192", "--reasoning") as url:
        result = check_api("--base-url", url, "--model", "geodistil-sim", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["profile"] == "vllm (/v1/models says owned_by 'vllm')"
    assert report["context_limit"] == 8192 and report["parameters"] == "accepted"
    assert report["reply_dialect"] in ("hermes", "none") and report["reasoning_returned"] is True
    assert report["verdict"] == (f"usable: geodistil run --base-url {url} --model geodistil-sim "
                                 "--teacher-profile vllm --tool-style hermes")


def test_check_api_corrects_refused_parameters_and_recommends_the_reasoning_profile():
    with sim_process("--profile", "openai-reasoning") as url:
        result = check_api("--base-url", url, "--model", "my-deployment", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["parameters"].startswith("corrected: max_tokens refused")
    assert "--teacher-profile openai-reasoning --tool-style native" in report["verdict"]
