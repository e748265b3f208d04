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
