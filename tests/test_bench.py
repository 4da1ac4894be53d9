"""The benchmark script runs and writes its table and JSON (timings are not asserted)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python scripts/<name> <args>`, checked to exit 0."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args],
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.slow
def test_quick_benchmark_writes_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    result = run_script("bench.py", "--quick", "--breakdown", "--out", str(out))
    assert "a/b" in result.stdout and "a/c" in result.stdout
    rows = json.loads(out.read_text())["results"]
    assert {(row["model"], row["batch"], row["variant"]) for row in rows} == {
        *((model, batch, "defaults") for model in ("mlp", "resnet20") for batch in (8, 64)),
        *(("mlp", batch, part) for batch in (8, 64)
          for part in ("bare + bnexp update", "bare + bnexp batches"))}
    for row in rows:  # one repeat: each ratio is the ratio of that repeat's speeds
        assert row["bnexp_steps_per_s"] > 0 and row["bare_steps_per_s"] > 0
        assert row["a_over_b"] == row["bnexp_steps_per_s"] / row["bare_steps_per_s"]
        if row["variant"] == "defaults":
            assert row["a_over_c"] == row["bnexp_steps_per_s"] / row["dataloader_steps_per_s"]


@pytest.mark.slow
def test_quick_epoch_benchmark_writes_table_and_json(tmp_path):
    out = tmp_path / "bench_epoch.json"
    result = run_script("bench_epoch.py", "--quick", "--out", str(out))
    assert "minimal/bnexp" in result.stdout
    rows = json.loads(out.read_text())["results"]
    assert [row["batch"] for row in rows] == [8, 64]
    for row in rows:
        assert row["bnexp_seconds_per_epoch"] > 0 and row["minimal_seconds_per_epoch"] > 0


@pytest.mark.slow
def test_report_benchmark_writes_its_time(tmp_path):
    out = tmp_path / "bench_report.json"
    run_script("bench_report.py", "--runs", "20", "--out", str(out))
    measured = json.loads(out.read_text())
    assert measured["runs"] == 20 and measured["seconds"] > 0


@pytest.mark.slow
def test_quick_packed_benchmark_writes_both_sections(tmp_path):
    out = tmp_path / "bench_packed.json"
    run_script("bench_packed.py", "--quick", "--out", str(out), timeout=900)
    measured = json.loads(out.read_text())
    assert {(row["model"], row["batch"], row["members"]) for row in measured["steps"]} == {
        ("mlp", batch, count) for batch in (8, 64) for count in (1, 4)}
    for row in measured["steps"]:  # one repeat: the ratio is that repeat's
        assert row["speedup"] == row["packed_model_steps_per_s"] / row["single_steps_per_s"]
        assert row["peak_memory_mb"] > 0
    [sweep] = measured["sweep"]
    assert sweep["batch"] == 8 and sweep["runs"] == 4
    assert sweep["auto speedup over off"] == sweep["pack=off seconds"] / sweep["pack=auto seconds"]
