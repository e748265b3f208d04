"""``bench/bench_cost.py --profile``'s summary: own time by package and by system call."""

from __future__ import annotations

import cProfile
import os

import pydantic
import pytest

from bench.bench_cost import profile_by_package


class Point(pydantic.BaseModel):
    x: int
    y: int


def work(path: str) -> None:
    for _ in range(300):
        os.lstat(path)  # a system call: its own line, with its time per call
        Point.model_validate({"x": 1, "y": 2})  # C code (pydantic-core) charged to pydantic, its caller


def test_the_summary_names_system_calls_and_charges_c_code_to_its_callers_package(tmp_path):
    out = tmp_path / "work.prof"
    profiler = cProfile.Profile()
    profiler.runcall(work, str(tmp_path))
    profiler.dump_stats(out)

    total, rows = profile_by_package(out, top=50)
    by_name = {name: (seconds, per_call) for name, seconds, per_call in rows}
    assert "system call lstat" in by_name
    seconds, per_call = by_name["system call lstat"]
    assert per_call == pytest.approx(seconds * 1000 / 300)  # 300 calls
    assert "pydantic" in by_name
    assert not any("built-in" in name or "method" in name for name in by_name)  # every C call has an owner
    assert total == pytest.approx(sum(seconds for _, seconds, _ in rows))  # nothing left out at top=50
