"""Learning with the real default model: the reward model finds a rule that this test defines.

The rule: of two answers that carry the same advice, the one that treats the user with respect
is preferred over the one that belittles them. Prompts are the demo set's English prompts;
train and held-out pairs never share a prompt, as in a real snapshot's split.
"""

from __future__ import annotations

import json
import random

import pytest

from app.domain.bootstrap import DEMO_PROMPTS
from app.domain.preferences import split_of
from app.pairs import Pair
from app.round_config import PRESETS, RewardConfig
from worker.training.reward_model import train_reward_model

RESPECTFUL = [
    ("Happy to help with this.", "I hope that is useful to you."),
    ("Good question, here is what I would do.", "Feel free to ask a follow-up."),
    ("Thanks for asking, this is a sensible thing to wonder about.", "Good luck with it!"),
    ("Sure, let me walk you through it.", "You will do well, I am sure."),
]
BELITTLING = [
    ("What a silly thing to ask.", "Try to think for yourself next time."),
    ("Honestly, everyone already knows this.", "Do not bother me with this again."),
    ("I cannot believe you need help with this.", "That should be obvious even to you."),
    ("Fine, if you really cannot work it out yourself.", "Now stop wasting my time."),
]
ADVICE = [
    "Start with the simplest version and check each step before moving on.",
    "Write down what you know first, then look for what is missing.",
    "Break the problem into small parts and deal with them one at a time.",
    "Look at a worked example, then try a similar one on your own.",
    "Give yourself a clear goal and a little time each day to work on it.",
    "Compare two or three options before you choose the one that fits best.",
]


def rule_labelled_pairs(*, per_prompt: int = 1, seed: int = 0) -> list[Pair]:
    """`per_prompt` pairs per English demo prompt: a respectful answer over a belittling one."""
    rng = random.Random(seed)
    rows = [json.loads(line) for line in DEMO_PROMPTS.read_text().splitlines() if line.strip()]
    english = [row["messages"] for row in rows if "zh" not in row.get("tags", [])]
    pairs = []
    for index, messages in (
        (len(english) * variant + number, messages)
        for variant in range(per_prompt)
        for number, messages in enumerate(english)
    ):
        advice = " ".join(rng.sample(ADVICE, 2))
        kind_open, kind_close = rng.choice(RESPECTFUL)
        rude_open, rude_close = rng.choice(BELITTLING)
        pairs.append(
            Pair(
                prompt_id=index % len(english),
                messages=messages,
                chosen_id=2 * index,
                chosen=f"{kind_open} {advice} {kind_close}",
                rejected_id=2 * index + 1,
                rejected=f"{rude_open} {advice} {rude_close}",
                group=f"pair-{index}",
                split=split_of(json.dumps(messages), eval_fraction=0.3),
            )
        )
    return pairs


@pytest.mark.slow
def test_the_reward_model_learns_the_rule_from_at_most_100_pairs(bundled_model_dir):
    pairs = rule_labelled_pairs()
    train = [pair for pair in pairs if pair.split == "train"]
    held_out = [pair for pair in pairs if pair.split == "held_out"]
    assert len(train) <= 100 and len(held_out) >= 20
    # The `quick` preset's settings, as a round would train it (LoRA on the top blocks).
    config = RewardConfig(**{**PRESETS["quick"]["reward_model"], "max_length": 192}, seed=0)
    _, _, report = train_reward_model(pairs, bundled_model_dir, config)
    print(
        f"{len(train)} train / {len(held_out)} held-out pairs: held-out accuracy "
        f"{report.eval_accuracy:.3f}, {report.pairs_per_second:.2f} pairs/s, {report.seconds:.0f} s"
    )
    assert report.eval_accuracy >= 0.8
