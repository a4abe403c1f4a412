"""The reward model: its loss and metrics by hand, shared-prefix scoring, training smoke tests."""

from __future__ import annotations

import json
import math

import pytest
import torch

from app.pairs import Pair, canonical_line
from worker.training.data import PreferenceBatcher, encode_turn
from worker.training.reward_model import (
    RewardConfig,
    RewardScorer,
    load_reward_model,
    main,
    normalization_of,
    pair_loss,
    preference_metrics,
    save_reward_model,
    shared_prefix_rewards,
    train_reward_model,
)

CPU = torch.device("cpu")


def sigmoid_loss(difference: float) -> float:
    return -math.log(1 / (1 + math.exp(-difference)))


def test_the_bradley_terry_loss_by_hand():
    chosen, rejected = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.5])
    ones, zeros = torch.ones(2), torch.zeros(2)
    plain = pair_loss(chosen, rejected, target=ones, margin=zeros, weight=ones)
    assert plain.item() == pytest.approx((sigmoid_loss(1.0) + sigmoid_loss(-1.0)) / 2)
    margin = pair_loss(chosen, rejected, target=ones, margin=torch.tensor([0.5, 0.0]), weight=ones)
    assert margin.item() == pytest.approx((sigmoid_loss(0.5) + sigmoid_loss(-1.0)) / 2)
    tie = pair_loss(
        torch.tensor([1.0]),
        torch.tensor([1.0]),
        target=torch.tensor([0.5]),
        margin=torch.zeros(1),
        weight=torch.ones(1),
    )
    assert tie.item() == pytest.approx(math.log(2))
    weighted = pair_loss(
        chosen, rejected, target=ones, margin=zeros, weight=torch.tensor([3.0, 1.0])
    )
    assert weighted.item() == pytest.approx((3 * sigmoid_loss(1.0) + sigmoid_loss(-1.0)) / 4)
    centred = pair_loss(
        chosen, rejected, target=ones, margin=zeros, weight=ones, center_coefficient=0.1
    )
    assert centred.item() == pytest.approx(plain.item() + 0.1 * (3.0**2 + 2.0**2) / 2)


def test_metrics_count_accuracy_calibration_and_agreement():
    metrics = preference_metrics(
        torch.tensor([3.0, 0.0, 1.0, 5.0]),
        torch.tensor([0.0, 2.0, 1.0, 0.0]),
        [1.0, 1.0, 0.5, 1.0],
        [1.0, 0.5, None, None],
    )
    assert metrics["accuracy"] == pytest.approx(2 / 3)  # the tie is neither right nor wrong
    assert metrics["accuracy_by_agreement"] == {"unanimous": 1.0, "split": 0.0}
    assert 0 <= metrics["calibration_error"] <= 1


def pairs_for(count: int, *, split: str = "train") -> list[Pair]:
    """Pairs whose chosen answer is always polite and the rejected one rude."""
    return [
        Pair(
            prompt_id=index,
            messages=[{"role": "user", "content": f"Question number {index}?"}],
            chosen_id=2 * index,
            chosen=f"Thank you for asking, the answer is {index}.",
            rejected_id=2 * index + 1,
            rejected=f"Stupid question. It is {index}.",
            group=f"ranking-{index // 2}",
            split=split,
        )
        for index in range(count)
    ]


def test_shared_prefix_scoring_equals_scoring_each_sequence_whole(tiny_model_dir):
    model, tokenizer = load_reward_model(tiny_model_dir, CPU)
    model.eval()
    batcher = PreferenceBatcher(pairs_for(5), tokenizer, max_length=64)
    batch = next(batcher.batches(8, shuffle=False))
    with torch.no_grad():
        shared = shared_prefix_rewards(model, batch.tensors(model.config.pad_token_id, CPU))
        whole = torch.stack(
            [
                model(input_ids=torch.tensor([batch.prompt_ids[owner] + response])).logits[0, 0]
                for owner, response in zip(batch.response_prompt, batch.response_ids, strict=True)
            ]
        )
    assert torch.allclose(shared, whole, atol=1e-5)


def test_a_batch_keeps_rankings_whole_and_lists_each_answer_once(tiny_model_dir):
    _, tokenizer = load_reward_model(tiny_model_dir, CPU)
    shared_answer = pairs_for(2)
    shared_answer[1] = Pair(
        **{
            **shared_answer[1].__dict__,
            "prompt_id": 0,
            "messages": shared_answer[0].messages,
            "chosen": shared_answer[0].chosen,
            "group": "ranking-0",
        }
    )
    batch = next(
        PreferenceBatcher(shared_answer, tokenizer, max_length=64).batches(1, shuffle=False)
    )
    assert batch.size == 2  # one ranking is never split, even past batch_pairs
    assert len(batch.prompt_ids) == 1 and len(batch.response_ids) == 3


def token_pairs(batch) -> list[tuple]:
    """Each pair of `batch` as (prompt, chosen, rejected, weight) tokens."""
    return [
        (batch.prompt_ids[batch.response_prompt[chosen]], batch.response_ids[chosen])
        + (batch.response_ids[rejected], weight)
        for chosen, rejected, weight in zip(batch.chosen, batch.rejected, batch.weight, strict=True)
    ]


def test_micro_batches_hold_every_pair_once_within_the_token_budget(tiny_model_dir):
    _, tokenizer = load_reward_model(tiny_model_dir, CPU)
    batch = next(
        PreferenceBatcher(pairs_for(6), tokenizer, max_length=64).batches(6, shuffle=False)
    )
    width = max(map(len, batch.prompt_ids)) + max(map(len, batch.response_ids))
    budget = 4 * width  # two pairs' answers
    parts = batch.micro_batches(budget)
    assert [part.size for part in parts] == [2, 2, 2]
    for part in parts:
        assert (
            len(part.response_ids)
            * (max(map(len, part.prompt_ids)) + max(map(len, part.response_ids)))
            <= budget
        )
    assert [pair for part in parts for pair in token_pairs(part)] == token_pairs(batch)
    assert batch.micro_batches(10_000) == [batch] and len(batch.micro_batches(1)) == 6


def test_long_turns_are_cut_from_the_prompts_start():
    class Template:
        def apply_chat_template(self, messages, tokenize, return_dict, add_generation_prompt):
            words = " ".join(m["content"] for m in messages).split()
            return list(range(len(words) + (1 if add_generation_prompt else 0)))

    prompt, answer = encode_turn(
        Template(), [{"role": "user", "content": "a " * 50}], "b " * 5, max_length=20
    )
    assert len(prompt) + len(answer) <= 20 and len(answer) == 4


def changed_parameters(before: dict, model) -> list[str]:
    return [
        name
        for name, tensor in model.named_parameters()
        if tensor.requires_grad and not torch.equal(before[name], tensor.detach())
    ]


def test_training_finds_the_rule_and_changes_every_trainable_parameter(tiny_model_dir):
    pairs = pairs_for(24) + pairs_for(8, split="held_out")
    start, _ = load_reward_model(tiny_model_dir, CPU)
    before = {name: tensor.detach().clone() for name, tensor in start.named_parameters()}
    config = RewardConfig(epochs=3, learning_rate=3e-3, batch_pairs=4, device="cpu")
    model, _, report = train_reward_model(pairs, tiny_model_dir, config)
    assert all(math.isfinite(point["loss"]) for point in report.curve if "loss" in point)
    trainable = [name for name, tensor in model.named_parameters() if tensor.requires_grad]
    assert sorted(changed_parameters(before, model)) == sorted(trainable)
    assert report.eval_accuracy is not None and report.train_pairs == 24
    assert report.reward_std > 0


def test_lora_training_changes_the_adapters_and_saves_a_plain_model(tiny_model_dir, tmp_path):
    config = RewardConfig(
        epochs=1, learning_rate=1e-2, batch_pairs=4, lora=True, lora_rank=4, device="cpu"
    )
    model, tokenizer, report = train_reward_model(pairs_for(8), tiny_model_dir, config)
    assert not hasattr(model, "peft_config")  # adapters merged into plain weights
    assert all(math.isfinite(point["loss"]) for point in report.curve)
    path = save_reward_model(model, tokenizer, report, tmp_path / "rm-lora")
    reloaded, _ = load_reward_model(path, CPU)
    assert type(reloaded).__name__ == "LlamaForSequenceClassification"


def test_the_same_seed_gives_the_same_reward_model(tiny_model_dir):
    def run(seed: int) -> list[dict[str, float]]:
        config = RewardConfig(epochs=1, batch_pairs=2, lora=True, seed=seed, device="cpu")
        report = train_reward_model(
            pairs_for(8) + pairs_for(4, split="held_out"), tiny_model_dir, config
        )[2]
        return report.curve

    first = run(1)
    assert run(1) == first and run(2) != first


def test_micro_batches_train_the_same_reward_model_as_one_pass(tiny_model_dir):
    def run(micro_batch_tokens: int) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
        config = RewardConfig(
            epochs=1,
            batch_pairs=4,
            learning_rate=1e-3,
            center_coefficient=0.1,
            micro_batch_tokens=micro_batch_tokens,
            device="cpu",
        )
        model, _, report = train_reward_model(pairs_for(8), tiny_model_dir, config)
        return report.curve, {name: value.clone() for name, value in model.state_dict().items()}

    one_pass, one_pass_weights = run(10_000)
    curve, weights = run(1)  # a pair at a time
    for point, expected in zip(curve, one_pass, strict=True):
        assert point == pytest.approx(expected, rel=1e-4, abs=1e-5)
    for name, value in weights.items():
        torch.testing.assert_close(value, one_pass_weights[name], rtol=1e-4, atol=1e-5)


def test_a_saved_reward_model_goes_on_learning_from_its_own_head(tiny_model_dir, tmp_path):
    config = RewardConfig(
        epochs=1, learning_rate=1e-2, batch_pairs=4, lora=True, lora_layers=1, device="cpu"
    )
    first, tokenizer, report = train_reward_model(pairs_for(8), tiny_model_dir, config)
    path = save_reward_model(first, tokenizer, report, tmp_path / "rm-1")
    assert torch.equal(load_reward_model(path, CPU)[0].score.weight, first.score.weight)
    second, _, again = train_reward_model(pairs_for(8), path, config)
    assert again.steps > 0 and not torch.equal(second.score.weight, first.score.weight)


def test_the_saved_model_carries_its_normalisation_and_scores_with_or_without_it(
    tiny_model_dir, tmp_path
):
    config = RewardConfig(epochs=1, batch_pairs=4, device="cpu")
    model, tokenizer, report = train_reward_model(pairs_for(6), tiny_model_dir, config)
    path = save_reward_model(model, tokenizer, report, tmp_path / "rm")
    assert normalization_of(path) == (
        pytest.approx(report.reward_mean),
        pytest.approx(report.reward_std),
    )
    assert normalization_of(tmp_path) == (0.0, 1.0)
    question = [{"role": "user", "content": "Question?"}]
    conversations, answers = [question, question], ["Thank you, here it is.", "No."]
    raw = RewardScorer(path, CPU, normalize=False).score(conversations, answers)
    scaled = RewardScorer(path, CPU).score(conversations, answers)
    torch.testing.assert_close(scaled, (raw - report.reward_mean) / report.reward_std)


def test_the_command_line_trains_from_a_snapshot_file(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_bytes(b"".join(canonical_line(pair.__dict__) for pair in pairs_for(6)))
    out = tmp_path / "rm-cli"
    assert (
        main(
            [
                "--data",
                str(data),
                "--base",
                str(tiny_model_dir),
                "--out",
                str(out),
                "--epochs",
                "1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert (out / "model.safetensors").is_file()
    assert json.loads(capsys.readouterr().out)["train_pairs"] == 6
