"""The GPU check (`bench/gpu_check.py`, issue 18) as a smoke test on the CPU: `--small` runs
every workload, TRL's comparisons included where TRL imports, in under 3 minutes; and the check
needs nothing of the web tier or the database."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from tests.test_layers import ROOT, loaded_after

WORKLOADS = [
    "reward model",
    "PPO",
    "RLOO",
    "DPO",
    "engine batch 1",
    "engine batch 16",
    "engine batch 64",
]
TRL_COMPARED = {"reward model", "RLOO", "DPO"}
NOT_NEEDED = {"fastapi", "sqlalchemy", "celery", "uvicorn", "alembic", "psycopg", "redis"}


@pytest.mark.serial  # its wall time is the acceptance figure: alone, as `make test` runs it
def test_the_small_check_runs_every_workload_in_under_three_minutes(
    tmp_path, bundled_tokenizer_dir
):
    shutil.copytree(bundled_tokenizer_dir, tmp_path / "models" / bundled_tokenizer_dir.name)
    figures = tmp_path / "figures.json"
    command = [sys.executable, "bench/gpu_check.py", "--device", "cpu", "--small"]
    started = time.perf_counter()
    run = subprocess.run(
        [*command, "--data-dir", str(tmp_path), "--json", str(figures)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - started
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    table = [line.split("|")[1].strip() for line in run.stdout.splitlines() if line[:2] == "| "]
    assert table == ["workload", *WORKLOADS]
    assert seconds < 180
    rows = {row["workload"]: row for row in json.loads(figures.read_text())["rows"]}
    assert all(row["ours"]["seconds_per_step"] > 0 for row in rows.values())
    compared = {name for name, row in rows.items() if row["reference"] is not None}
    assert compared == TRL_COMPARED | set(WORKLOADS[4:])  # TRL is a test dependency


def test_importing_the_check_loads_no_web_tier_or_database():
    assert loaded_after(["bench.gpu_check"]).isdisjoint(NOT_NEEDED)
