"""PPO, RLOO and DPO on the tiny model: the layout is right, losses are finite, weights move."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM

from app.pairs import Pair
from app.round_config import DPOConfig, PolicyConfig, PPOConfig, RLOOConfig
from worker.training.dpo import train_dpo
from worker.training.policy import Policy, Rollout, answer_logprobs, answer_values
from worker.training.ppo import PPOStep, train_ppo
from worker.training.reward_model import RewardScorer, load_reward_model
from worker.training.rl_math import token_logprobs
from worker.training.rloo import train_rloo

PROMPTS = [
    [{"role": "user", "content": f"Tell me something about the number {n}."}] for n in range(6)
]
SMALL = {"max_new_tokens": 8, "device": "cpu", "learning_rate": 1e-3}


def parameters(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.named_parameters()}


def unchanged(before: dict[str, torch.Tensor], model) -> list[str]:
    return [
        name
        for name, tensor in model.named_parameters()
        if tensor.requires_grad and torch.equal(before[name], tensor.detach())
    ]


def test_answer_logprobs_and_values_read_the_right_columns(tiny_model_dir, tiny_reward_model):
    policy = Policy(tiny_model_dir, PolicyConfig(**SMALL))
    try:
        rollout = policy.rollout(PROMPTS[:3], samples=2, seed=1)
    finally:
        policy.close()
    assert len(rollout) == 6 and rollout.conversation == [0, 0, 1, 1, 2, 2]
    batched, _ = answer_logprobs(policy.model, rollout)
    for row in range(len(rollout)):  # each row alone, unpadded, as one plain sequence
        prompt = rollout.prompt_ids[row][rollout.prompt_mask[row].bool()]
        answer = rollout.response_ids[row][rollout.response_mask[row].bool()]
        logits = policy.model(torch.cat([prompt, answer]).unsqueeze(0)).logits[0]
        expected = token_logprobs(logits[len(prompt) - 1 : -1], answer)
        torch.testing.assert_close(batched[row, : len(answer)], expected, atol=1e-4, rtol=0)
    critic, _ = load_reward_model(tiny_reward_model, torch.device("cpu"))
    values = answer_values(critic, rollout)
    assert values.shape == rollout.response_ids.shape and torch.isfinite(values).all()


def test_ppo_updates_policy_and_critic_and_records_kl(tiny_model_dir, tiny_reward_model):
    config = PPOConfig(**SMALL, steps=2, prompts_per_step=4, minibatch_size=2, ppo_epochs=2)
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    policy, curve = train_ppo(PROMPTS, tiny_model_dir, tiny_reward_model, config)
    assert [point["step"] for point in curve] == [1, 2]
    for point in curve:
        for name in ("reward", "kl", "entropy", "policy_loss", "value_loss", "clip_fraction"):
            assert math.isfinite(point[name]), name
    assert curve[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # the first rollout is the reference
    assert curve[1]["kl"] != pytest.approx(0.0, abs=1e-4)
    assert unchanged(parameters(start), policy.model) == []


def test_rloo_updates_the_policy_and_records_kl(tiny_model_dir, tiny_reward_model):
    config = RLOOConfig(**SMALL, steps=2, prompts_per_step=3, samples_per_prompt=2)
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    policy, curve = train_rloo(PROMPTS, tiny_model_dir, tiny_reward_model, config)
    assert all(math.isfinite(point["policy_loss"]) for point in curve)
    assert curve[1]["kl"] != pytest.approx(0.0, abs=1e-6) and curve[1]["generated_tokens"] > 0
    assert unchanged(parameters(start), policy.model) == []


def dpo_pairs() -> list[Pair]:
    return [
        Pair(
            prompt_id=index,
            messages=prompt,
            chosen_id=2 * index,
            chosen="A kind and careful answer.",
            rejected_id=2 * index + 1,
            rejected="Go away.",
            group=f"g{index}",
        )
        for index, prompt in enumerate(PROMPTS)
    ]


def test_dpo_learns_to_prefer_the_chosen_answers(tiny_model_dir):
    config = DPOConfig(**{**SMALL, "learning_rate": 1e-2}, epochs=3, batch_pairs=3)
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    policy, curve = train_dpo(dpo_pairs(), tiny_model_dir, config)
    assert all(math.isfinite(point["loss"]) for point in curve)
    assert curve[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference
    assert curve[-1]["loss"] < curve[0]["loss"] and curve[-1]["reward_margin"] > 0
    assert unchanged(parameters(start), policy.model) == []


def test_the_nll_term_makes_the_chosen_answers_likelier_than_dpo_alone(tiny_model_dir):
    def final_nll(coefficient: float) -> float:
        config = DPOConfig(
            **{**SMALL, "learning_rate": 1e-2}, epochs=2, batch_pairs=3, nll_coefficient=coefficient
        )
        curve = train_dpo(dpo_pairs(), tiny_model_dir, config)[1]
        assert curve[0]["chosen_nll"] > 0
        return curve[-1]["chosen_nll"]

    assert final_nll(1.0) < final_nll(0.0)


def test_the_nll_term_on_rewrites_trains_only_the_answers_raters_wrote(tiny_model_dir):
    """Without rewrites among the pairs it is plain DPO; with every chosen answer a rewrite,
    it is RPO."""

    def trained(pairs: list[Pair], **settings) -> dict[str, torch.Tensor]:
        config = DPOConfig(**{**SMALL, "learning_rate": 1e-2}, batch_pairs=3, **settings)
        return parameters(train_dpo(pairs, tiny_model_dir, config)[0].model)

    def same(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
        return all(torch.allclose(first[name], second[name], atol=1e-6) for name in first)

    sampled = dpo_pairs()
    written = [replace(pair, source="rewrite") for pair in sampled]
    on_rewrites = {"nll_coefficient": 1.0, "nll_pairs": "rewrites"}
    assert same(trained(sampled, **on_rewrites), trained(sampled))
    assert same(trained(written, **on_rewrites), trained(written, nll_coefficient=1.0))
    assert not same(trained(written, **on_rewrites), trained(written))


def test_micro_batches_take_the_same_steps_as_one_pass(tiny_model_dir):
    def run(micro_batch_tokens: int) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
        config = DPOConfig(
            **{**SMALL, "learning_rate": 1e-2},
            batch_pairs=3,
            nll_coefficient=0.5,
            nll_pairs="rewrites",
            micro_batch_tokens=micro_batch_tokens,
        )
        pairs = [  # every other pair's chosen answer written by a rater
            replace(pair, source="rewrite") if index % 2 else pair
            for index, pair in enumerate(dpo_pairs())
        ]
        policy, curve = train_dpo(pairs, tiny_model_dir, config)
        return timeless(curve), parameters(policy.model)

    assert_micro_batches_match_one_pass(run, weights_atol=1e-5)  # a pair; a few pairs


@pytest.mark.parametrize("algorithm", ["rloo", "ppo"])
def test_online_micro_batches_take_the_same_step_as_one_pass(
    algorithm, tiny_model_dir, tiny_reward_model
):
    kind, train = (PPOConfig, train_ppo) if algorithm == "ppo" else (RLOOConfig, train_rloo)

    def run(micro_batch_tokens: int) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
        config = kind(
            **{**SMALL, "learning_rate": 1e-2},
            steps=1,
            prompts_per_step=4,
            micro_batch_tokens=micro_batch_tokens,
        )
        policy, curve = train(PROMPTS, tiny_model_dir, tiny_reward_model, config)
        return timeless(curve), parameters(policy.model)

    # An answer, a few answers at a time; Adam makes a near-0 gradient's noise a step.
    one_pass_weights = assert_micro_batches_match_one_pass(run, weights_atol=1e-4)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert any(not torch.equal(p, one_pass_weights[n]) for n, p in base.named_parameters())


def test_a_lora_critic_shares_its_trunk_with_the_reward_model(tiny_model_dir, tiny_reward_model):
    config = PPOConfig(**{**SMALL, "learning_rate": 1e-2}, lora=True, lora_rank=4, ppo_epochs=2)
    policy = Policy(tiny_model_dir, config)
    step = PPOStep.against(tiny_reward_model, policy, config)
    try:
        critic_before = parameters(step.critic)
        step(PROMPTS[:4], seed=1)
    finally:
        policy.close()
    assert step.scorer.model is step.critic
    assert unchanged(critic_before, step.critic) == []  # adapters and head copy trained
    answers = ["Seven is odd.", "It is a number.", "", "Four"]
    alone = RewardScorer(tiny_reward_model, torch.device("cpu"))
    torch.testing.assert_close(
        step.scorer.score(PROMPTS[:4], answers), alone.score(PROMPTS[:4], answers)
    )


def assert_micro_batches_match_one_pass(run, *, weights_atol: float) -> dict[str, torch.Tensor]:
    """`run(micro_batch_tokens)` gives the same curve and weights at 1 and 40 tokens a
    micro-batch as in one pass; the one pass's weights."""
    one_pass, one_pass_weights = run(10_000)
    for micro in (1, 40):
        curve, weights = run(micro)
        for point, expected in zip(curve, one_pass, strict=True):
            assert point == pytest.approx(expected, rel=1e-4, abs=1e-5)
        for name, value in weights.items():
            torch.testing.assert_close(value, one_pass_weights[name], rtol=1e-4, atol=weights_atol)
    return one_pass_weights


def timeless(curve: list[dict[str, float]]) -> list[dict[str, float]]:
    """A training curve without its timings, which vary from run to run."""
    return [{k: v for k, v in point.items() if "second" not in k} for point in curve]


@pytest.mark.parametrize("algorithm", ["ppo", "rloo", "dpo"])
def test_the_same_seed_gives_the_same_curve(algorithm, tiny_model_dir, tiny_reward_model):
    def run(seed: int) -> list[dict[str, float]]:
        if algorithm == "dpo":
            config = DPOConfig(**SMALL, epochs=1, batch_pairs=2, lora=True, seed=seed)
            return timeless(train_dpo(dpo_pairs(), tiny_model_dir, config)[1])
        kind, train = (PPOConfig, train_ppo) if algorithm == "ppo" else (RLOOConfig, train_rloo)
        config = kind(**SMALL, steps=2, prompts_per_step=2, seed=seed)
        return timeless(train(PROMPTS, tiny_model_dir, tiny_reward_model, config)[1])

    first = run(1)
    assert run(1) == first and run(2) != first


def test_lora_keeps_one_copy_and_its_reference_is_the_base(tiny_model_dir, tiny_reward_model):
    config = RLOOConfig(**SMALL, steps=2, prompts_per_step=2, lora=True, lora_rank=4)
    policy, curve = train_rloo(PROMPTS, tiny_model_dir, tiny_reward_model, config)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad(), policy.reference() as reference:
        torch.testing.assert_close(reference(ids).logits, base(ids).logits)
    trainable = [name for name, p in policy.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    with torch.no_grad():
        assert not torch.allclose(policy.merged()(ids).logits, base(ids).logits)
    assert curve[-1]["kl"] != pytest.approx(0.0, abs=1e-6)


def test_lora_on_the_top_blocks_trains_only_them_and_runs_no_backward_below(tiny_model_dir):
    config = DPOConfig(
        **{**SMALL, "learning_rate": 1e-2},
        lora=True,
        lora_rank=4,
        lora_layers=1,
        epochs=1,
        batch_pairs=3,
    )
    trained, curve = train_dpo(dpo_pairs(), tiny_model_dir, config)
    assert curve[-1]["loss"] < curve[0]["loss"]
    trainable = [name for name, p in trained.model.named_parameters() if p.requires_grad]
    assert trainable and all("layers.1." in name and "lora_" in name for name in trainable)
    tracked = []
    lowest_block = trained.model.get_base_model().model.layers[0]
    lowest_block.register_forward_hook(lambda _m, _i, out: tracked.append(out[0].requires_grad))
    rollout = Rollout.from_tokens([[1, 2, 3]], [[4, 5]], pad_id=0, device=torch.device("cpu"))
    logprobs, _ = answer_logprobs(trained.model, rollout)
    assert logprobs.requires_grad and tracked == [False, False]  # prompt and answer passes
