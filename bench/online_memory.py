"""Peak memory and time of the online trainers (RLOO, PPO) on the default model, against
another checkout of alignloop in the same run.

Each trainer runs `--steps` steps of its `quick` preset (LoRA on the top 8 blocks, 8 prompts a
step, 128-token rollouts) on the bundled SmolLM2-135M-Instruct, fp32 on the CPU, against a
reward model that is the base with a seeded one-output head, in a process of its own: its peak
RSS (the process and whatever it waited for) and wall seconds are that run's. The same runs
are made with the code of `--against` (a checkout, e.g. `git worktree add /tmp/old <commit>`),
and the table gives both and their ratio. Answer lengths are printed too: with the same seed,
equal lengths show that both checkouts sampled the same rollouts.

    .venv/bin/python bench/online_memory.py --against /tmp/old [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / ".cache" / "alignment" / "models" / "base"
"""The bundled model, converted by `bench/alignment_study.py` (done here first if needed)."""
ALGORITHMS = ("rloo", "ppo")
PROMPTS = 24


def run_trainer(algorithm: str, steps: int) -> dict:
    """In this process, with the code of whichever checkout is first on `sys.path`."""
    from harness import seeded_reward_model

    import worker
    from app.domain.bootstrap import DEMO_PROMPTS
    from app.models import Algorithm
    from app.round_config import POLICY_PRESETS, PPOConfig, RLOOConfig

    reward = seeded_reward_model(BASE)
    rows = [json.loads(line) for line in DEMO_PROMPTS.read_text().splitlines() if line.strip()]
    prompts = [row["messages"] for row in rows if "zh" not in row.get("tags", [])][:PROMPTS]
    settings = {**POLICY_PRESETS["quick"][Algorithm(algorithm)], "steps": steps, "device": "cpu"}
    if algorithm == "rloo":
        from worker.training.rloo import train_rloo as train

        config = RLOOConfig(**settings)
    else:
        from worker.training.ppo import train_ppo as train

        config = PPOConfig(**settings)
    _, curve = train(prompts, BASE, reward, config)
    return {
        "code": str(Path(worker.__file__).parent.parent),
        "response_length": [round(point["response_length"]) for point in curve],
    }


def measure(checkout: Path, algorithm: str, steps: int) -> dict:
    """Run one trainer on `checkout`'s code in a child process: its figures."""
    command = [sys.executable, __file__, "--run", algorithm, "--steps", str(steps)]
    started = time.perf_counter()
    child = subprocess.Popen(
        command,
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": f"{checkout}{os.pathsep}{REPO / 'bench'}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if status:
        raise SystemExit(f"{algorithm} on {checkout} failed (status {status})")
    result = json.loads(output.strip().splitlines()[-1])
    if Path(result["code"]).resolve() != checkout.resolve():
        raise SystemExit(f"{algorithm} ran {result['code']}'s code, not {checkout}'s")
    return {
        **result,
        "seconds": time.perf_counter() - started,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # kilobytes on Linux
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, help="the reference checkout")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--run", choices=ALGORITHMS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_trainer(args.run, args.steps)))
        return 0
    if args.against is None or not (args.against / "worker").is_dir():
        parser.error("--against must be a checkout of alignloop (a folder with worker/)")
    sys.path.insert(0, str(REPO / "bench"))
    from alignment_study import base_path

    base_path()  # convert the bundled model once, outside any measurement
    print("| trainer | checkout | seconds | peak RSS | answer lengths per step |")
    print("|---|---|---|---|---|")
    for algorithm in ALGORITHMS:
        ours, theirs = (measure(path, algorithm, args.steps) for path in (REPO, args.against))
        for name, result in (("this", ours), (str(args.against), theirs)):
            print(
                f"| {algorithm} | {name} | {result['seconds']:.1f} | "
                f"{result['peak_rss_mib']:.0f} MiB | {result['response_length']} |"
            )
        print(
            f"| {algorithm} | ratio this / reference | "
            f"{ours['seconds'] / theirs['seconds']:.2f} | "
            f"{ours['peak_rss_mib'] / theirs['peak_rss_mib']:.2f} | |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
