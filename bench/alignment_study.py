"""Which training settings align the default model fastest: win rate per CPU-minute.

The full loop (`bench/alignment.py`) takes half an hour per rule; comparing a dozen settings
that way would take days. This study keeps what does not change between settings and varies
only the training: for each rule it samples the base model's candidates once (two answers to
each training prompt, as a candidate job would), has three simulated raters with 10% random
rankings judge them (`alignment_rules.rank`, and `alignment_rules.rewrite` where the rule
has raters write the answer they want), and samples the base's answers to held-out prompts
once. Each setting then trains from those pairs in a fresh process (so that its peak
RSS is its own), answers the same held-out prompts with the same seeds, and is judged by the
rule against the base: win rate with a 95% bootstrap interval, KL to the base on its own
answers, distinct bigrams, and the CPU seconds it spent (all threads, user + system). Settings
that need a reward model share one (`--reward`, by default `rm_quick`, the quick preset's),
trained once per rule; its CPU time is added to theirs.

    .venv/bin/python bench/alignment_study.py --rule concise [--variants rm_quick,rpo_lr1e-3,...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from bench/: make `app` and `worker` importable
from alignment_rules import (  # noqa: E402  (bench/alignment_rules.py, next to this file)
    RULES,
    Comparison,
    Rule,
    judge,
    rank,
    rewrite,
)

CACHE = REPO / ".cache" / "alignment"
TRAIN_PROMPTS = 64
HELD_OUT = 32
SEEDS = (1, 2)
RATERS = 3
NOISE = 0.1
CANDIDATE_TOKENS = 192
SERVED_TOKENS = 192
SAMPLING = {"temperature": 0.8, "top_p": 0.95}

# Each setting: an algorithm and its trainer settings. LoRA adapts the top 8 of the model's 30
# blocks (rank 16) unless the name says otherwise. The online settings start from the `quick`
# presets (app/domain/rounds.py): 8 steps of 8 prompts, rollouts of 128 tokens, learning rate 1e-3.
TOP = {"lora": True, "lora_layers": 8}
ONLINE = {**TOP, "learning_rate": 1e-3, "steps": 8, "prompts_per_step": 8, "max_new_tokens": 128}
RLOO2 = {**ONLINE, "samples_per_prompt": 2}
VARIANTS: dict[str, dict] = {
    "dpo": {"algorithm": "dpo", "policy": {**TOP, "learning_rate": 1e-4, "epochs": 2}},
    "dpo_lr3e-5": {"algorithm": "dpo", "policy": {**TOP, "learning_rate": 3e-5, "epochs": 2}},
    "dpo_lr3e-4": {"algorithm": "dpo", "policy": {**TOP, "learning_rate": 3e-4, "epochs": 2}},
    "dpo_lr1e-3": {"algorithm": "dpo", "policy": {**TOP, "learning_rate": 1e-3, "epochs": 2}},
    "dpo_lr3e-3": {"algorithm": "dpo", "policy": {**TOP, "learning_rate": 3e-3, "epochs": 2}},
    "dpo_lr1e-3_4ep": {"algorithm": "dpo", "policy": {**TOP, "learning_rate": 1e-3, "epochs": 4}},
    "rpo_lr1e-3": {
        "algorithm": "dpo",
        "policy": {**TOP, "learning_rate": 1e-3, "epochs": 2, "nll_coefficient": 1.0},
    },
    "rpo_rewrites_lr1e-3": {
        "algorithm": "dpo",
        "policy": {
            **TOP,
            "learning_rate": 1e-3,
            "epochs": 2,
            "nll_coefficient": 1.0,
            "nll_pairs": "rewrites",
        },
    },
    "rpo0.2_lr1e-3": {
        "algorithm": "dpo",
        "policy": {**TOP, "learning_rate": 1e-3, "epochs": 2, "nll_coefficient": 0.2},
    },
    "rpo_all_layers": {
        "algorithm": "dpo",
        "policy": {"lora": True, "learning_rate": 1e-3, "epochs": 2, "nll_coefficient": 1.0},
    },
    "rpo_full_lr1e-5": {
        "algorithm": "dpo",
        "policy": {"lora": False, "learning_rate": 1e-5, "epochs": 2, "nll_coefficient": 1.0},
    },
    "sft_chosen": {
        "algorithm": "sft_chosen",
        "sft": {**TOP, "learning_rate": 5e-4, "epochs": 2, "batch_size": 4},
    },
    "rloo2": {"algorithm": "rloo", "policy": RLOO2},
    "rloo2_lr1e-4": {"algorithm": "rloo", "policy": {**RLOO2, "learning_rate": 1e-4}},
    "rloo4": {
        "algorithm": "rloo",
        "policy": {**RLOO2, "prompts_per_step": 4, "samples_per_prompt": 4},
    },
    "rloo2_no_eos_penalty": {"algorithm": "rloo", "policy": {**RLOO2, "missing_eos_penalty": 0.0}},
    "rloo2_48_tokens": {"algorithm": "rloo", "policy": {**RLOO2, "max_new_tokens": 48}},
    "rloo2_256_tokens": {"algorithm": "rloo", "policy": {**RLOO2, "max_new_tokens": 256}},
    "rloo2_raw_rewards": {"algorithm": "rloo", "policy": {**RLOO2, "normalize_rewards": False}},
    "rloo2_16_steps": {"algorithm": "rloo", "policy": {**RLOO2, "steps": 16}},
    "rloo2_16_prompts": {"algorithm": "rloo", "policy": {**RLOO2, "prompts_per_step": 16}},
    "ppo": {"algorithm": "ppo", "policy": {**ONLINE, "value_learning_rate": 1e-3}},
    "online_dpo": {"algorithm": "online_dpo", "policy": ONLINE},
    "rsft": {
        "algorithm": "rsft",
        "samples": 4,
        "sft": {**TOP, "learning_rate": 5e-4, "epochs": 2, "batch_size": 4},
    },
}
REWARD_MODELS = {
    "lora": {
        **TOP,
        "learning_rate": 1e-4,
        "epochs": 1,
        "batch_pairs": 4,
        "gradient_accumulation": 2,
    },
    "lora_2ep": {
        **TOP,
        "learning_rate": 1e-4,
        "epochs": 2,
        "batch_pairs": 4,
        "gradient_accumulation": 2,
    },
    # The `quick` preset's (app/domain/rounds.py), and the same for two epochs.
    "quick": {**TOP, "learning_rate": 1e-3, "epochs": 1, "batch_pairs": 8, "max_length": 384},
    "quick_2ep": {**TOP, "learning_rate": 1e-3, "epochs": 2, "batch_pairs": 8, "max_length": 384},
    "lora_all_layers": {
        "lora": True,
        "learning_rate": 1e-4,
        "epochs": 1,
        "batch_pairs": 2,
        "gradient_accumulation": 4,
    },
}


# --- the data every setting shares ---------------------------------------------------------------


def split_prompts(rule: Rule, train: int = TRAIN_PROMPTS) -> tuple[list[dict], list[dict]]:
    """(training prompts, held-out prompts): a seeded shuffle, with the held-out ones chosen
    among those the rule judges (plus half as many others, which are answered but not judged)."""
    prompts = rule.prompts()
    random.Random(0).shuffle(prompts)
    judged = [p for p in prompts if rule.judged(p["tags"])]
    others = [p for p in prompts if not rule.judged(p["tags"])]
    held_out = judged[:HELD_OUT] + others[: HELD_OUT // 2]
    chosen = {id(p) for p in held_out}
    return [p for p in prompts if id(p) not in chosen][:train], held_out


def base_answers(rule: Rule, folder: Path) -> dict:
    """The base's candidates for the training prompts and its held-out answers, cached."""
    path = folder / "base.json"
    if path.is_file():
        return json.loads(path.read_text())
    from worker.serving.engine import GenerationEngine, Sampling

    train, held_out = split_prompts(rule)
    model, tokenizer = load_base()
    engine = GenerationEngine(model, tokenizer, name="base", max_batch_size=64)
    try:
        candidates = engine.generate(
            [p["messages"] for p in train],
            Sampling(max_new_tokens=CANDIDATE_TOKENS, seed=1, **SAMPLING),
            n=2,
        )
        answers = {seed: held_out_answers(engine, held_out, seed) for seed in SEEDS}
    finally:
        engine.close(drain=False)
    data = {
        "train": [
            {**p, "answers": [done.text for done in group]}
            for p, group in zip(train, candidates, strict=True)
        ],
        "held_out": [
            {**p, "answers": [answers[seed][index] for seed in SEEDS]}
            for index, p in enumerate(held_out)
        ],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False))
    return data


def held_out_answers(engine, prompts: list[dict], seed: int) -> list[str]:
    from worker.serving.engine import Sampling

    sampling = Sampling(max_new_tokens=SERVED_TOKENS, seed=seed * 100_000, **SAMPLING)
    done = engine.generate([p["messages"] for p in prompts], sampling)
    return [group[0].text for group in done]


def load_base():
    """The bundled default model, converted once into the benchmark's cache."""
    from worker.model_store import ModelStore

    store = ModelStore(bench_settings())
    if not (store.path_for("base") / "config.json").is_file():
        model, tokenizer = store.load_source("bundled")
        store.save("base", model, tokenizer)
    return store.load("base")


def base_path() -> Path:
    path = CACHE / "models" / "base"
    if not (path / "config.json").is_file():
        load_base()
    return path


def bench_settings():
    from app.config import Settings

    return Settings(
        _env_file=None,
        data_dir=CACHE,
        base_model="bundled",
        device="cpu",
        secret_key="alignment-study-" + "0" * 40,
    )


def rated_pairs(rule: Rule, data: dict) -> list:
    """Three simulated raters judge every task; each strict judgement becomes a pair, and
    each rewrite a pair of the rewrite over the answer it replaces."""
    from app.domain.preferences import split_of
    from app.pairs import Pair

    pairs = []
    for task, prompt in enumerate(data["train"]):
        answers = list(enumerate(prompt["answers"]))
        if answers[0][1] == answers[1][1]:
            continue
        key = hashlib.sha256(prompt["messages"][-1]["content"].encode()).hexdigest()
        for rater in range(RATERS):
            rng = random.Random(task * RATERS + rater)
            ranking = rank(rule, answers, prompt["tags"], noise=NOISE, rng=rng)
            written = rewrite(rule, answers, prompt["tags"], rng=rng)
            top = ranking[0][0] if isinstance(ranking[0], list) else ranking[0]
            common = {
                "prompt_id": task,
                "messages": prompt["messages"],
                "task_id": task,
                "rater_id": rater,
                "group": f"{task}:{rater}",
                "split": split_of(key),
            }
            if written:  # as a snapshot does: the rewrite over the answer it replaces
                pairs.append(
                    Pair(
                        chosen_id=-(task * RATERS + rater + 1),
                        chosen=written,
                        rejected_id=task * 2 + top,
                        rejected=prompt["answers"][top],
                        source="rewrite",
                        **common,
                    )
                )
            if isinstance(ranking[0], list):
                continue  # a tie: `ties: skip`, as the quick preset does
            chosen, rejected = ranking
            pairs.append(
                Pair(
                    chosen_id=task * 2 + chosen,
                    chosen=prompt["answers"][chosen],
                    rejected_id=task * 2 + rejected,
                    rejected=prompt["answers"][rejected],
                    **common,
                )
            )
    return pairs


# --- one setting, in its own process -------------------------------------------------------------


def run_variant(rule: Rule, name: str, folder: Path, reward: str) -> dict:
    """Train setting `name` on the rule's pairs and judge its held-out answers; the settings
    that need a reward model use `folder / reward`."""
    import torch

    from worker.serving.engine import GenerationEngine

    torch.manual_seed(0)
    spec = VARIANTS.get(name, {"algorithm": "reward_model"})
    data = base_answers(rule, folder)
    pairs = rated_pairs(rule, data)
    started_cpu, started = time.process_time(), time.perf_counter()
    if spec["algorithm"] == "reward_model":
        return train_reward(rule, name.removeprefix("rm_"), data, pairs, folder)
    model, tokenizer = train_policy(spec, pairs, data, folder / reward)
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started
    engine = GenerationEngine(model, tokenizer, name="study", max_batch_size=64)
    try:
        answers = {seed: held_out_answers(engine, data["held_out"], seed) for seed in SEEDS}
    finally:
        engine.close(drain=False)
    kl = kl_to_base(model, tokenizer, engine.pad_id, data["held_out"], answers)
    result = judge(rule, comparisons(data, answers))
    return {
        "variant": name,
        "reward_model": reward if spec["algorithm"] in NEEDS_REWARD else None,
        **result,
        "kl_to_base": kl,
        "train_cpu_s": cpu,
        "train_wall_s": wall,
        "pairs": len(pairs),
        "rewrite_pairs": sum(pair.source == "rewrite" for pair in pairs),
        "peak_rss_mb": peak_rss_mb(),
    }


def train_reward(rule: Rule, kind: str, data: dict, pairs: list, folder: Path) -> dict:
    """Train reward model `kind` on the pairs; its accuracy on the held-out pairs, and its
    agreement with the rule on the base's two held-out answers to each prompt where the rule
    prefers one (more pairs, and no rater noise)."""
    from app.round_config import RewardConfig
    from worker.training.reward_model import RewardScorer, save_reward_model, train_reward_model

    started_cpu, started = time.process_time(), time.perf_counter()
    config = RewardConfig(device="cpu", **REWARD_MODELS[kind])
    model, tokenizer, report = train_reward_model(pairs, base_path(), config)
    save_reward_model(model, tokenizer, report, folder / f"rm_{kind}")
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started
    scorer = RewardScorer(folder / f"rm_{kind}", model.device)
    agreements = []
    for prompt in data["held_out"]:
        first, second = (rule.grade(text, prompt["tags"]) for text in prompt["answers"])
        if abs(first - second) > 1e-9:
            scores = scorer.score([prompt["messages"]] * 2, prompt["answers"]).tolist()
            agreements.append((scores[0] > scores[1]) == (first > second))
    return {
        "variant": f"rm_{kind}",
        "eval_accuracy": report.eval_accuracy,
        "train_pairs": report.train_pairs,
        "eval_pairs": report.eval_pairs,
        "agrees_with_rule": sum(agreements) / len(agreements),
        "rule_pairs": len(agreements),
        "train_cpu_s": cpu,
        "train_wall_s": wall,
        "peak_rss_mb": peak_rss_mb(),
    }


NEEDS_REWARD = {"rloo", "ppo", "online_dpo", "rsft"}


def train_policy(spec: dict, pairs: list, data: dict, reward: Path):
    """(model, tokenizer) trained by the setting `spec` (with reward model `reward` where it
    needs one)."""
    policy = _trained_policy(spec, pairs, data, reward)
    if isinstance(policy, tuple):
        return policy
    return policy.model.eval(), policy.tokenizer


def _trained_policy(spec: dict, pairs: list, data: dict, reward: Path):
    from app.round_config import DPOConfig, PPOConfig, RLOOConfig, build_config

    algorithm = spec["algorithm"]
    conversations = [p["messages"] for p in data["train"]]
    if algorithm == "dpo":
        from worker.training.dpo import train_dpo

        return train_dpo(pairs, base_path(), build_config(DPOConfig, spec["policy"], device="cpu"))[
            0
        ]
    if algorithm in ("rloo", "ppo"):
        from worker.training.ppo import train_ppo
        from worker.training.rloo import train_rloo

        train, kind = (train_rloo, RLOOConfig) if algorithm == "rloo" else (train_ppo, PPOConfig)
        config = build_config(kind, spec["policy"], device="cpu")
        return train(conversations, base_path(), reward, config)[0]
    if algorithm == "online_dpo":
        return online_dpo(conversations, reward, spec["policy"])
    if algorithm == "rsft":
        return rejection_sampling(conversations, reward, spec)
    if algorithm == "sft_chosen":
        return sft_on_chosen(pairs, spec)
    raise ValueError(algorithm)


def online_dpo(conversations: list, reward: Path, settings: dict):
    """Iterative DPO (Xu et al. 2023; Guo et al. 2024): each step samples two answers per prompt
    from the current policy, the reward model labels the pair, and one DPO update follows,
    against the base as reference."""
    import torch

    from app.pairs import Pair
    from app.round_config import DPOConfig, OnlineConfig, build_config
    from worker.training.dpo import dpo_steps_on_pairs
    from worker.training.policy import Policy, prompt_batches
    from worker.training.reward_model import RewardScorer

    config = build_config(OnlineConfig, settings, device="cpu")
    dpo = DPOConfig(beta=0.1, batch_pairs=8)
    policy = Policy(base_path(), config)
    scorer = RewardScorer(reward, policy.device)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=config.learning_rate)
    batches = prompt_batches(conversations, config.steps, config.prompts_per_step, config.seed)
    for step, batch in enumerate(batches, start=1):
        rollout = policy.rollout(batch, samples=2, seed=config.seed + step * 1000)
        scores = scorer.score([batch[i] for i in rollout.conversation], rollout.texts).view(-1, 2)
        pairs = []
        for index, (first, second) in enumerate(scores.tolist()):
            a, b = rollout.texts[2 * index], rollout.texts[2 * index + 1]
            if a == b:
                continue
            chosen, rejected = (a, b) if first >= second else (b, a)
            pairs.append(
                Pair(
                    prompt_id=index,
                    messages=batch[index],
                    chosen_id=0,
                    chosen=chosen,
                    rejected_id=1,
                    rejected=rejected,
                    group=str(index),
                )
            )
        if pairs:
            dpo_steps_on_pairs(policy, optimizer, pairs, dpo)
    policy.close()
    return policy


def rejection_sampling(conversations: list, reward: Path, spec: dict):
    """Best-of-n by the reward model, then supervised fine-tuning on the best answers
    (RAFT, Dong et al. 2023; the rejection-sampling step of Llama 2, Touvron et al. 2023)."""
    from app.round_config import SFTConfig
    from worker.serving.engine import GenerationEngine, Sampling
    from worker.training.data import Demonstration
    from worker.training.reward_model import RewardScorer
    from worker.training.sft import train_sft

    model, tokenizer = load_base()
    engine = GenerationEngine(model, tokenizer, name="rsft", max_batch_size=64)
    n = spec["samples"]
    try:
        done = engine.generate(conversations, Sampling(max_new_tokens=128, seed=7, **SAMPLING), n=n)
    finally:
        engine.close(drain=False)
    scorer = RewardScorer(reward, model.device)
    best = []
    for conversation, group in zip(conversations, done, strict=True):
        texts = [completion.text for completion in group]
        scores = scorer.score([conversation] * n, texts)
        best.append(Demonstration(conversation, texts[int(scores.argmax())]))
    del scorer, model
    trained, tokenizer, _ = train_sft(best, base_path(), SFTConfig(device="cpu", **spec["sft"]))
    return trained, tokenizer


def sft_on_chosen(pairs: list, spec: dict):
    """Supervised fine-tuning on the answers raters preferred (each task's majority choice):
    best-of-two by people rather than by a reward model."""
    from collections import Counter

    from app.round_config import SFTConfig
    from worker.training.data import Demonstration
    from worker.training.sft import train_sft

    votes: dict[int, Counter] = {}
    for pair in pairs:
        if pair.split == "train":
            votes.setdefault(pair.task_id, Counter())[pair.chosen] += 1
    messages = {pair.task_id: pair.messages for pair in pairs}
    best = [
        Demonstration(messages[task], count.most_common(1)[0][0]) for task, count in votes.items()
    ]
    trained, tokenizer, _ = train_sft(best, base_path(), SFTConfig(device="cpu", **spec["sft"]))
    return trained, tokenizer


def kl_to_base(model, tokenizer, pad_id: int, held_out: list[dict], answers: dict) -> float:
    """Mean summed log-ratio of the policy's own held-out answers, policy over base: a
    Monte Carlo estimate of KL(policy || base) per answer."""
    import torch

    from worker.training.data import encode_turn
    from worker.training.policy import Rollout, answer_logprobs

    prompts, replies = [], []
    for seed in SEEDS:
        for prompt, text in zip(held_out, answers[seed], strict=True):
            prompt_ids, answer_ids = encode_turn(
                tokenizer, prompt["messages"], text, max_length=1024
            )
            prompts.append(prompt_ids)
            replies.append(answer_ids)
    rollout = Rollout.from_tokens(prompts, replies, pad_id=pad_id, device=model.device)
    totals = []
    base, _ = load_base()
    with torch.no_grad():
        for start in range(0, len(rollout), 16):
            rows = rollout.rows(torch.arange(start, min(start + 16, len(rollout))))
            new, _ = answer_logprobs(model, rows)
            old, _ = answer_logprobs(base, rows)
            totals += ((new - old) * rows.response_mask).sum(1).tolist()
    return sum(totals) / len(totals)


def comparisons(data: dict, answers: dict) -> list[Comparison]:
    """Each held-out answer of the trained model against the base's with the same seed."""
    return [
        Comparison(index, prompt["tags"], answers[seed][index], prompt["answers"][slot])
        for index, prompt in enumerate(data["held_out"])
        for slot, seed in enumerate(SEEDS)
    ]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the command ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rule", choices=sorted(RULES), required=True)
    parser.add_argument("--variants", default="rm_quick,rpo_lr1e-3,rloo2")
    parser.add_argument(
        "--reward", default="rm_quick", help="the reward model (a trained rm_ variant) to use"
    )
    parser.add_argument("--run-variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rule = RULES[args.rule]
    folder = CACHE / "study" / rule.name
    if args.run_variant:
        print(json.dumps(run_variant(rule, args.run_variant, folder, args.reward)))
        return 0
    base_answers(rule, folder)
    results = folder / "results.jsonl"
    for name in args.variants.split(","):
        child = subprocess.run(
            [sys.executable, __file__, "--rule", rule.name, "--reward", args.reward]
            + ["--run-variant", name],
            capture_output=True,
            text=True,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
        if child.returncode:
            print(f"{name}: failed\n{child.stderr[-3000:]}", file=sys.stderr)
            continue
        result = json.loads(child.stdout.strip().splitlines()[-1])
        result["date"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
        with results.open("a") as out:
            out.write(json.dumps(result) + "\n")
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
