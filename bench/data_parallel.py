"""A trainer in two processes against the same trainer in one, on the default model: what data
parallel training costs and gives on this machine.

DPO (a `quick` epoch over 32 pairs) and RLOO (3 `quick` steps of 8 prompts) run on the bundled
SmolLM2-135M-Instruct, fp32 on the CPU, each as the command a round's stage runs
(`worker.launch.trainer_command`: torchrun and the trainer's flags). The reference is that
command with one process and all the machine's cores (`OMP_NUM_THREADS`); the measured one has
two processes, the cores shared out between them. Each row gives the wall seconds and the
peak RSS of the whole process tree (torchrun and its ranks, sampled every 0.1 s), and the ratio
row two processes over one. The last losses or rewards of both should agree (the test
`tests/worker/training/test_distributed.py` holds them to float rounding on the tiny model).

    .venv/bin/python bench/data_parallel.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from alignment_study import base_path  # noqa: E402
from harness import machine, seeded_reward_model  # noqa: E402

from app.bundled import demo_prompt_rows  # noqa: E402
from app.pairs import Pair, canonical_line  # noqa: E402
from app.round_config import POLICY_PRESETS, DPOConfig, RLOOConfig  # noqa: E402
from worker.launch import trainer_command  # noqa: E402
from worker.training.cli import PHASE_LINE, STEP_LINE  # noqa: E402

PAIRS = 32
RLOO_STEPS = 3
LAST_SHOWN = ("loss", "reward", "kl")


def prompts() -> list[list[dict]]:
    return [row["messages"] for row in demo_prompt_rows() if "zh" not in row.get("tags", [])]


def pairs() -> list[Pair]:
    """Synthetic preferences: a one-line answer over a rambling one."""
    return [
        Pair(
            prompt_id=index,
            messages=messages,
            chosen_id=2 * index,
            chosen="In short: it depends on what you need most.",
            rejected_id=2 * index + 1,
            rejected="Well, there are many things to say here, and " * 6,
        )
        for index, messages in enumerate(prompts()[:PAIRS])
    ]


def workloads(folder: Path) -> dict[str, tuple[str, dict[str, Path], object]]:
    """Each trainer's inputs and `quick` settings."""
    pairs_file, prompts_file = folder / "pairs.jsonl", folder / "prompts.jsonl"
    pairs_file.write_bytes(b"".join(canonical_line(pair.__dict__) for pair in pairs()))
    prompts_file.write_bytes(b"".join(canonical_line({"messages": m}) for m in prompts()))
    quick = POLICY_PRESETS["quick"]
    dpo = DPOConfig(**{**quick["dpo"], "epochs": 1, "device": "cpu"})
    rloo = RLOOConfig(**{**quick["rloo"], "steps": RLOO_STEPS, "device": "cpu"})
    base = base_path()
    return {
        "DPO": ("dpo", {"data": pairs_file, "base": base}, dpo),
        "RLOO": (
            "rloo",
            {"data": prompts_file, "base": base, "reward_model": seeded_reward_model(base)},
            rloo,
        ),
    }


def measure(trainer: str, inputs: dict[str, Path], config, processes: int, out: Path) -> dict:
    """Run the stage's command in `processes` processes: seconds, peak tree RSS, last point."""
    command = trainer_command(trainer, processes, {**inputs, "out": out}, config)
    threads = str(max(1, (os.cpu_count() or 1) // processes))
    started = time.perf_counter()
    child = subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": threads},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    peak = PeakTreeRSS(child.pid)
    output = child.communicate()[0]
    seconds = time.perf_counter() - started
    peak.stop()
    if child.returncode:
        raise SystemExit(f"{trainer} in {processes} processes failed ({child.returncode})")
    progress = (STEP_LINE, PHASE_LINE)
    report = json.loads(
        "".join(line for line in output.splitlines(True) if not line.startswith(progress))
    )
    return {"seconds": seconds, "peak_mib": peak.value / 2**20, "last": report["last"]}


class PeakTreeRSS:
    """The largest sum of RSS over a process and its descendants, sampled every 0.1 s."""

    def __init__(self, pid: int) -> None:
        self.root, self.value, self.done = psutil.Process(pid), 0, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.wait(0.1):
            try:
                tree = [self.root, *self.root.children(recursive=True)]
                self.value = max(self.value, sum(_rss(process) for process in tree))
            except psutil.NoSuchProcess:
                return

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.NoSuchProcess:
        return 0


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    print(f"machine: {machine()}\n")
    print("| trainer | processes | seconds | peak RSS (tree) | last point |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for name, (trainer, inputs, config) in workloads(folder).items():
            results = {}
            for processes in (1, 2):
                out = folder / f"{trainer}-{processes}"
                results[processes] = result = measure(trainer, inputs, config, processes, out)
                shown = {k: round(v, 4) for k, v in result["last"].items() if k in LAST_SHOWN}
                print(
                    f"| {name} | {processes} | {result['seconds']:.1f} | "
                    f"{result['peak_mib']:.0f} MiB | {shown} |",
                    flush=True,
                )
            one, two = results[1], results[2]
            print(
                f"| {name} | ratio 2 / 1 | {two['seconds'] / one['seconds']:.2f} | "
                f"{two['peak_mib'] / one['peak_mib']:.2f} | |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
