"""Reward-model training: alignloop's trainer against TRL's `RewardTrainer` on the same work.

Both train the same base model (the bundled SmolLM2-135M-Instruct, converted once into
`.cache/bench-serving/`, fp32 on the CPU) on the same preference pairs, with the same batch
size, epochs, learning rate, linear schedule without warm-up, gradient clipping and seed, one
after the other in this process. The pairs are synthetic and deterministic: a varied request
(about 75 tokens through the chat template) with a polite, helpful answer chosen over a curt,
rude one that carries the same facts (about 65 tokens each), so a sequence is about 140 tokens
and the rule can be learnt in an epoch or two.

The figure to track is training throughput, pairs x epochs over training seconds, ours over
TRL's with its defaults (gradient checkpointing on); TRL without gradient checkpointing is run
as well, for honesty. Held-out accuracy (chosen reward above rejected) comes with each, so a
speed-up cannot hide a model that learnt less. Seconds are training time on both sides,
without model loading or evaluation: ours are `RewardReport.seconds` (the training loop less
its one held-out evaluation per epoch, timed apart), TRL's `train_runtime` from
`trainer.train()` with evaluation off.

    .venv/bin/python bench/reward_model.py [--train-pairs 64] [--eval-pairs 32] [--epochs 2]
        [--batch-size 8] [--learning-rate 2e-5]
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
import transformers
import trl
from datasets import Dataset

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from bench/: make `app` and `worker` importable
from harness import base_model, machine, preference_rows  # noqa: E402  (bench/harness.py)

from app.pairs import Pair  # noqa: E402
from app.round_config import RewardConfig  # noqa: E402
from worker.training.reward_model import load_reward_model, train_reward_model  # noqa: E402

TARGET_RATIO = 1.3
SEED = 0
MAX_LENGTH = 512  # above every sequence here: neither side truncates or drops anything
SCORING_BATCH = 16  # sequences per forward pass when scoring held-out pairs
Messages = list[dict[str, str]]

# --- data: polite and helpful over curt and rude, same facts --------------------------------------

TOPICS = [
    (
        "keep basil alive on a windowsill",
        "Basil wants six hours of sun and soil that dries slightly between waterings.",
        "Pinch off the flower buds so the plant keeps putting energy into its leaves.",
    ),
    (
        "stop my bike chain from squeaking",
        "Wipe the chain clean with a rag first, then put one drop of oil on each link.",
        "Spin the pedals backwards for a minute and wipe off the extra oil afterwards.",
    ),
    (
        "make rice that is not sticky",
        "Rinse the rice until the water runs clear, which removes the loose surface starch.",
        "Use a little less water than the packet says and let it rest covered for ten minutes.",
    ),
    (
        "prepare for a job interview next week",
        "Read about the company and write down three stories that show what you have done.",
        "Practise answering out loud, and prepare two questions to ask the interviewer.",
    ),
    (
        "fall asleep faster at night",
        "Go to bed and get up at the same time every day, even at weekends.",
        "Keep the bedroom cool and dark, and put screens away half an hour before bed.",
    ),
    (
        "start running without hurting my knees",
        "Begin with short runs mixed with walking, three times a week, on soft ground.",
        "Increase your weekly distance by no more than about ten percent at a time.",
    ),
    (
        "write a clear email to my manager",
        "Put the main request in the first sentence and the subject line.",
        "Keep it short, use one paragraph per topic, and say what you need and by when.",
    ),
    (
        "save money on groceries",
        "Plan the week's meals before shopping and buy only what the list says.",
        "Compare prices per kilogram, and cook larger batches to freeze for later.",
    ),
    (
        "learn the basics of a new language",
        "Study a little every day, and learn the most common few hundred words first.",
        "Listen to simple podcasts and speak out loud, even when you make mistakes.",
    ),
    (
        "clean a cast iron pan",
        "Scrub it with hot water and a brush while it is still warm, without soaking it.",
        "Dry it on the stove and rub in a thin layer of oil to protect the seasoning.",
    ),
    (
        "keep my houseplants from getting pests",
        "Check the undersides of leaves every week, and isolate any new plant for a while.",
        "Wipe the leaves with a damp cloth and avoid leaving water standing in the saucer.",
    ),
    (
        "back up the photos on my laptop",
        "Keep one copy on an external drive and another with an online backup service.",
        "Set the backups to run automatically, and test restoring a few files now and then.",
    ),
    (
        "help my child with maths homework",
        "Ask them to explain how they started, which shows where they got stuck.",
        "Use everyday objects to show the idea, and praise the effort rather than the answer.",
    ),
    (
        "choose a good password",
        "Use a long passphrase of four or five unrelated words that you can remember.",
        "Never reuse it on other sites, and let a password manager keep the others.",
    ),
    (
        "paint a small room evenly",
        "Wash the walls, fill any holes, and use a primer where the old colour is dark.",
        "Cut in around the edges first, then roll in overlapping W shapes from top to bottom.",
    ),
    (
        "keep bread fresh for longer",
        "Store it cut side down in a bread bin or a paper bag, not in the fridge.",
        "Slice and freeze what you will not eat in two days, and toast it straight from frozen.",
    ),
    (
        "organise a small kitchen",
        "Keep the things you use daily within reach and store rare items up high.",
        "Use hooks and shelf risers to make use of the walls and the space inside cupboards.",
    ),
    (
        "reduce stress during exam season",
        "Break revision into short sessions with breaks and a clear plan for each day.",
        "Sleep well, eat regular meals, and take a short walk outside every day.",
    ),
    (
        "make my phone battery last longer",
        "Lower the screen brightness and turn off background refresh for apps you rarely use.",
        "Keep it out of the heat, and keep the charge between about twenty and eighty percent.",
    ),
    (
        "get better at public speaking",
        "Know your opening lines by heart and rehearse the whole talk out loud several times.",
        "Speak a little slower than feels natural and pause after your key points.",
    ),
    (
        "care for a new puppy",
        "Take it outside often, after meals and naps, and reward it when it goes there.",
        "Keep a steady routine for food, play and sleep, and start short training sessions early.",
    ),
    (
        "fix a dripping kitchen tap",
        "Turn off the water under the sink, then take the handle off to reach the cartridge.",
        "Replace the worn washer or cartridge with a matching one and reassemble it carefully.",
    ),
    (
        "plan a weekend camping trip",
        "Check the weather forecast and book a site with water and toilets nearby.",
        "Pack layers, a head torch and a simple meal plan, and practise pitching the tent at home.",
    ),
    (
        "read more books this year",
        "Carry a book with you and read a few pages whenever you would check your phone.",
        "Pick books you genuinely enjoy and give yourself permission to stop a boring one.",
    ),
]
PERSONAS = [
    "I'm a student who lives in a small flat in the city",
    "I work long shifts at a hospital and have little free time",
    "I'm retired and have finally got time for new projects",
    "I'm a parent of two young children and the mornings are hectic",
    "I have just moved to a new town and I'm setting up my home",
    "I'm on a tight budget this month and want to be careful",
    "I work from home and spend most of the day at my desk",
    "I'm a complete beginner and I get confused by jargon",
]
REQUESTS = [
    "Could you tell me how to {topic}? A few practical steps would really help me.",
    "What is the best way to {topic}? Please explain it simply so that I can start today.",
    "I have been wondering how to {topic}. What would you suggest I do first?",
    "Can you give me some advice on how to {topic}? I would like something I can follow.",
]
POLITE_OPENERS = [
    "Great question, and I'm happy to help you with this.",
    "Thank you for asking, that is a very sensible thing to want to do.",
    "Of course! Here is a simple approach that works well for most people.",
    "I'd be glad to help, and it is easier than it might sound.",
]
POLITE_CLOSERS = [
    "I hope this helps, and good luck, feel free to ask if anything is unclear!",
    "Take it one step at a time, and please come back if you have more questions.",
    "You are clearly on the right track, and I'm sure it will go well for you.",
    "Let me know how it goes, I'm always happy to help you with the next step.",
]
RUDE_OPENERS = [
    "Ugh, this is such an obvious question that I can't believe you asked it.",
    "Seriously? Anyone with half a brain already knows this, but fine, listen.",
    "Wow, you really couldn't figure this out on your own, could you? Whatever.",
    "Stop wasting my time with basic stuff like this, it is embarrassing for you.",
]
RUDE_CLOSERS = [
    "Now go away and don't bother me with something this trivial ever again.",
    "If you still get it wrong after that, honestly, that is entirely your problem.",
    "Try using your own head next time instead of making me spell it all out.",
    "That's it, and frankly I doubt you'll manage it anyway, so good luck with that.",
]


def make_pairs(train: int, held_out: int, *, seed: int = SEED) -> list[Pair]:
    """`train` + `held_out` pairs over distinct requests (held-out requests are never trained
    on), each a polite answer chosen over a rude one with the same facts."""
    rng = random.Random(seed)
    requests = [
        (topic, persona, request)
        for topic in TOPICS
        for persona in PERSONAS
        for request in REQUESTS
    ]
    if train + held_out > len(requests):
        raise ValueError(f"at most {len(requests)} distinct pairs")
    rng.shuffle(requests)
    pairs = []
    for index, ((topic, first, second), persona, request) in enumerate(
        requests[: train + held_out]
    ):
        facts = f"{first} {second}"
        pairs.append(
            Pair(
                prompt_id=index,
                messages=[{"role": "user", "content": f"{persona}. {request.format(topic=topic)}"}],
                chosen_id=2 * index,
                chosen=f"{rng.choice(POLITE_OPENERS)} {facts} {rng.choice(POLITE_CLOSERS)}",
                rejected_id=2 * index + 1,
                rejected=f"{rng.choice(RUDE_OPENERS)} {facts} {rng.choice(RUDE_CLOSERS)}",
                group=f"pair-{index}",
                split="train" if index < train else "held_out",
            )
        )
    return pairs


def conversation(pair: Pair, answer: str) -> Messages:
    return [*pair.messages, {"role": "assistant", "content": answer}]


def trl_dataset(pairs: Sequence[Pair]) -> Dataset:
    """The same pairs as TRL's conversational preference rows (explicit prompt)."""
    return Dataset.from_list(preference_rows(pairs))


# --- model and scoring ---------------------------------------------------------------------------


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def full_sequence_rewards(model, tokenizer, conversations: Sequence[Messages]) -> torch.Tensor:
    """One reward per conversation from plain forward passes on the whole templated sequence,
    right-padded, as TRL trains and scores (the head reads the last non-pad token)."""
    model.eval()
    rewards = []
    for batch in chunks(conversations, SCORING_BATCH):
        ids = [
            tokenizer.apply_chat_template(list(c), tokenize=True, return_dict=False) for c in batch
        ]
        inputs = tokenizer.pad({"input_ids": ids}, padding_side="right", return_tensors="pt")
        rewards.append(model(**inputs).logits.squeeze(-1).float())
    return torch.cat(rewards)


def held_out_accuracy(model, tokenizer, pairs: Sequence[Pair]) -> float:
    """Share of held-out pairs whose chosen answer gets the higher reward (full sequences)."""
    chosen = full_sequence_rewards(model, tokenizer, [conversation(p, p.chosen) for p in pairs])
    rejected = full_sequence_rewards(model, tokenizer, [conversation(p, p.rejected) for p in pairs])
    return (chosen > rejected).float().mean().item()


# --- the trainers --------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    seconds: float
    pairs_per_s: float
    accuracy: float
    note: str = ""


def run_alignloop(pairs: list[Pair], base: Path, args: argparse.Namespace) -> Result:
    config = RewardConfig(
        epochs=args.epochs,
        batch_pairs=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_ratio=0.0,
        max_length=MAX_LENGTH,
        early_stopping_patience=10**6,
        evaluations_per_epoch=1,
        seed=SEED,
        device="cpu",
    )
    model, tokenizer, report = train_reward_model(pairs, base, config)
    trained = report.train_pairs * args.epochs
    per_epoch = [point["eval_accuracy"] for point in report.curve if "eval_accuracy" in point]
    # cross-check of the shared-prefix scoring: the same model read the way TRL's is
    check = held_out_accuracy(model, tokenizer, [p for p in pairs if p.split == "held_out"])
    note = (
        f"held-out accuracy per evaluation {per_epoch}; "
        f"same model scored on full sequences: {check:.3f}"
    )
    del model
    gc.collect()
    return Result("alignloop", report.seconds, trained / report.seconds, report.eval_accuracy, note)


def run_trl(
    pairs: list[Pair], base: Path, args: argparse.Namespace, *, gradient_checkpointing: bool
) -> Result:
    train = [pair for pair in pairs if pair.split == "train"]
    model, tokenizer = load_reward_model(base, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as output_dir:
        config = trl.RewardConfig(
            output_dir=output_dir,
            use_cpu=True,
            bf16=False,
            per_device_train_batch_size=args.batch_size,
            num_train_epochs=args.epochs,
            learning_rate=args.learning_rate,
            lr_scheduler_type="linear",
            warmup_steps=0,
            max_grad_norm=1.0,
            weight_decay=0.0,
            max_length=MAX_LENGTH,
            gradient_checkpointing=gradient_checkpointing,
            seed=SEED,
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            disable_tqdm=True,
        )
        trainer = trl.RewardTrainer(
            model=model, args=config, train_dataset=trl_dataset(train), processing_class=tokenizer
        )
        seconds = trainer.train().metrics["train_runtime"]
    accuracy = held_out_accuracy(
        trainer.model, tokenizer, [p for p in pairs if p.split == "held_out"]
    )
    del model, trainer
    gc.collect()
    name = "TRL" if gradient_checkpointing else "TRL, no gradient checkpointing"
    return Result(name, seconds, len(train) * args.epochs / seconds, accuracy)


# --- report --------------------------------------------------------------------------------------


def token_lengths(pairs: Sequence[Pair], tokenizer) -> tuple[int, int, int]:
    """(shortest, mean, longest) full sequence, prompt plus answer, in tokens."""
    lengths = [
        len(
            tokenizer.apply_chat_template(
                conversation(pair, answer), tokenize=True, return_dict=False
            )
        )
        for pair in pairs
        for answer in (pair.chosen, pair.rejected)
    ]
    return min(lengths), round(sum(lengths) / len(lengths)), max(lengths)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-pairs", type=int, default=64)
    parser.add_argument("--eval-pairs", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--data-dir", type=Path, default=REPO / ".cache" / "bench-serving")
    args = parser.parse_args()
    base = base_model(args.data_dir)
    pairs = make_pairs(args.train_pairs, args.eval_pairs)
    shortest, mean, longest = token_lengths(pairs, transformers.AutoTokenizer.from_pretrained(base))
    print(
        f"{args.train_pairs} train + {args.eval_pairs} held-out pairs, sequences of "
        f"{shortest}-{longest} tokens (mean {mean}); batch {args.batch_size}, "
        f"{args.epochs} epoch(s), lr {args.learning_rate}, {torch.get_num_threads()} threads",
        flush=True,
    )
    results = []
    for name, run in [
        ("alignloop", lambda: run_alignloop(pairs, base, args)),
        ("TRL (defaults)", lambda: run_trl(pairs, base, args, gradient_checkpointing=True)),
        ("TRL (no GC)", lambda: run_trl(pairs, base, args, gradient_checkpointing=False)),
    ]:
        print(f"training: {name} ...", flush=True)
        started = time.perf_counter()
        results.append(run())
        print(f"  done in {time.perf_counter() - started:.0f} s wall", flush=True)
    report(results, args, (shortest, mean, longest))
    return 0


def report(results: list[Result], args: argparse.Namespace, lengths: tuple[int, int, int]) -> None:
    ours, reference, no_checkpointing = results
    ratio = ours.pairs_per_s / reference.pairs_per_s
    met = ratio >= TARGET_RATIO and ours.accuracy >= reference.accuracy
    verdict = "met" if met else "NOT MET"
    print(f"\nmachine: {machine()}, transformers {transformers.__version__}, trl {trl.__version__}")
    for result in results:
        print(
            f"{result.name:32s} {result.pairs_per_s:5.2f} pairs/s  ({result.seconds:6.1f} s)  "
            f"held-out accuracy {result.accuracy:.3f}"
        )
        if result.note:
            print(f"{'':32s} {result.note}")
    print(
        f"ratio {ratio:.2f} against TRL defaults (target >= {TARGET_RATIO} at equal or better "
        f"accuracy) -> {verdict}; against TRL without gradient checkpointing "
        f"{ours.pairs_per_s / no_checkpointing.pairs_per_s:.2f}"
    )
    print("\nRESULTS.md line:")
    print(
        f"| {datetime.now(UTC):%Y-%m-%d %H:%M} | {args.train_pairs}+{args.eval_pairs} pairs of "
        f"~{lengths[1]} tokens, batch {args.batch_size}, {args.epochs} epoch(s), lr "
        f"{args.learning_rate:g} | {ours.pairs_per_s:.2f} | {reference.pairs_per_s:.2f} | "
        f"**{ratio:.2f}** | {ours.accuracy:.3f} | {reference.accuracy:.3f} | "
        f"{verdict.lower()} | {no_checkpointing.pairs_per_s:.2f} / "
        f"{no_checkpointing.accuracy:.3f} |"
    )


if __name__ == "__main__":
    sys.exit(main())
