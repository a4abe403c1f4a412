"""One on-policy step: alignloop's RLOO step against TRL's RLOOTrainer and GRPOTrainer.

All three do the same work on the same machine in one run: the bundled SmolLM2-135M-Instruct
(fp32, CPU), 8 prompts per step with 2 samples each and 48 new tokens (temperature 1), the same
reward model (the base with a seeded one-output head, stored once), the same KL weight beta
against a frozen reference, the same learning rate and one optimiser step per batch. TRL 1.16
has no PPO trainer any more (the last was in 1.12), so PPO is not compared.

Per step: seconds (the median over the measured steps, after one warm-up step) and generated
tokens per second (answer tokens over step seconds). The figure to track is TRL's seconds per
step over ours, for each TRL trainer, with TRL's defaults (gradient checkpointing on); run it
again with `--no-gradient-checkpointing` for TRL without it.

    .venv/bin/python bench/policy_step.py [--steps 3] [--prompts 8] [--samples 2] [--tokens 48]
        [--no-gradient-checkpointing]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
import transformers
import trl
from datasets import Dataset

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from bench/: make `app` and `worker` importable
from harness import StepTimer, base_model, machine  # noqa: E402  (bench/harness.py)

from app.bundled import demo_prompt_rows  # noqa: E402
from app.round_config import RLOOConfig  # noqa: E402
from worker.training.policy import Policy  # noqa: E402
from worker.training.reward_model import (  # noqa: E402
    RewardReport,
    RewardScorer,
    load_reward_model,
    save_reward_model,
)
from worker.training.rloo import RLOOStep  # noqa: E402

TARGET_RATIO = 1.5
BETA = 0.05
LEARNING_RATE = 1e-6
SEED = 0


@dataclass
class Result:
    name: str
    step_seconds: list[float]
    tokens: list[int]

    @property
    def seconds(self) -> float:
        return statistics.median(self.step_seconds)

    @property
    def tokens_per_second(self) -> float:
        return sum(self.tokens) / sum(self.step_seconds)


def prompts(count: int) -> list[list[dict[str, str]]]:
    """The first English single-turn demo prompts of moderate length."""
    chosen = [
        row["messages"]
        for row in demo_prompt_rows()
        if "zh" not in row.get("tags", []) and len(row["messages"][-1]["content"]) < 200
    ]
    return chosen[:count]


def reward_model(base: Path, folder: Path) -> Path:
    """The base with a seeded, untrained one-output head: a fixed reward for both sides."""
    path = folder / "reward-bench"
    if not (path / "config.json").is_file():
        torch.manual_seed(SEED)
        model, tokenizer = load_reward_model(base, torch.device("cpu"))
        save_reward_model(model, tokenizer, RewardReport(train_pairs=0, eval_pairs=0), path)
    return path


def run_alignloop(batches, base: Path, reward: Path, args) -> Result:
    config = RLOOConfig(
        steps=len(batches),
        prompts_per_step=args.prompts,
        samples_per_prompt=args.samples,
        max_new_tokens=args.tokens,
        beta=BETA,
        learning_rate=LEARNING_RATE,
        device="cpu",
        seed=SEED,
        missing_eos_penalty=0.0,
    )
    policy = Policy(base, config)
    step = RLOOStep(policy, RewardScorer(reward, policy.device), config)
    seconds, tokens = [], []
    try:
        for number, batch in enumerate(batches):
            started = time.perf_counter()
            metrics = step(batch, seed=SEED + number)
            seconds.append(time.perf_counter() - started)
            tokens.append(metrics["generated_tokens"])
    finally:
        policy.close()
    return Result("alignloop RLOO", seconds[1:], tokens[1:])


def run_trl(kind: str, batches, base: Path, reward: Path, args) -> Result:
    """TRL's trainer with its defaults (gradient checkpointing on), or with checkpointing off
    under `--no-gradient-checkpointing`."""
    trainer_class, config_class = {
        "rloo": (trl.RLOOTrainer, trl.RLOOConfig),
        "grpo": (trl.GRPOTrainer, trl.GRPOConfig),
    }[kind]
    dataset = Dataset.from_list([{"prompt": prompt} for batch in batches for prompt in batch])
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as output_dir:
        config = config_class(
            output_dir=output_dir,
            use_cpu=True,
            bf16=False,
            per_device_train_batch_size=args.prompts * args.samples,
            num_generations=args.samples,
            max_completion_length=args.tokens,
            temperature=1.0,
            top_p=1.0,
            beta=BETA,
            learning_rate=LEARNING_RATE,
            max_grad_norm=1.0,
            max_steps=len(batches),
            shuffle_dataset=False,
            logging_steps=1,
            report_to=[],
            save_strategy="no",
            disable_tqdm=True,
            seed=SEED,
            gradient_checkpointing=args.gradient_checkpointing,
        )
        trainer = trainer_class(
            model=str(base),
            reward_funcs=str(reward),
            args=config,
            train_dataset=dataset,
            callbacks=[timer],
        )
        trainer.train()
        lengths = [
            entry["completions/mean_length"]
            for entry in trainer.state.log_history
            if "completions/mean_length" in entry
        ]
    tokens = [round(length * args.prompts * args.samples) for length in lengths]
    name = f"TRL {trainer_class.__name__}{'' if args.gradient_checkpointing else ', no GC'}"
    return Result(name, timer.seconds[1:], tokens[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="measured steps, after one warm-up")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--data-dir", type=Path, default=REPO / ".cache" / "bench-serving")
    parser.add_argument(
        "--no-gradient-checkpointing",
        dest="gradient_checkpointing",
        action="store_false",
        help="run TRL with gradient checkpointing off (its default is on)",
    )
    args = parser.parse_args()
    base = base_model(args.data_dir)
    reward = reward_model(base, args.data_dir / "models")
    pool = prompts(args.prompts * (args.steps + 1))
    batches = [
        pool[step * args.prompts : (step + 1) * args.prompts] for step in range(args.steps + 1)
    ]
    print(
        f"{args.steps} measured steps (+1 warm-up) of {args.prompts} prompts x {args.samples} "
        f"samples x {args.tokens} new tokens, beta {BETA}, {torch.get_num_threads()} threads",
        flush=True,
    )
    results = []
    for name, run in [
        ("alignloop", lambda: run_alignloop(batches, base, reward, args)),
        ("TRL RLOO", lambda: run_trl("rloo", batches, base, reward, args)),
        ("TRL GRPO", lambda: run_trl("grpo", batches, base, reward, args)),
    ]:
        print(f"running: {name} ...", flush=True)
        results.append(run())
    report(results, args)
    return 0


def report(results: list[Result], args) -> None:
    ours, *references = results
    print(f"\nmachine: {machine()}, transformers {transformers.__version__}, trl {trl.__version__}")
    for result in results:
        steps = ", ".join(f"{seconds:.1f}" for seconds in result.step_seconds)
        print(
            f"{result.name:24s} {result.seconds:6.2f} s/step (steps: {steps})  "
            f"{result.tokens_per_second:6.1f} generated tokens/s"
        )
    ratios = {reference.name: reference.seconds / ours.seconds for reference in references}
    for name, ratio in ratios.items():
        verdict = "met" if ratio >= TARGET_RATIO else "NOT MET"
        print(f"speed-up against {name}: {ratio:.2f}x (target >= {TARGET_RATIO}) -> {verdict}")
    print("\nRESULTS.md line:")
    cells = " | ".join(
        f"{reference.seconds:.1f} s ({reference.tokens_per_second:.0f} tok/s) | "
        f"**{ratios[reference.name]:.2f}**"
        for reference in references
    )
    print(
        f"| {datetime.now(UTC):%Y-%m-%d %H:%M} | {args.prompts}x{args.samples}x{args.tokens} | "
        f"{ours.seconds:.1f} s ({ours.tokens_per_second:.0f} tok/s) | {cells} |"
    )


if __name__ == "__main__":
    sys.exit(main())
