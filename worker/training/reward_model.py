"""The reward model: a one-output head on the policy's weights, trained on preference pairs.

InstructGPT's recipe (Ouyang et al. 2022): a sequence-classification head on the base model,
the Bradley-Terry loss `-log sigmoid(r_chosen - r_rejected)` over every pair of a ranking with
the ranking's pairs in one batch, and a held-out split by prompt. Choices beyond the paper, each
opt-in and visible in `RewardConfig`: margins from the rater's preference strength (Llama 2),
0.5 targets for ties, reward centring (Eisenstein et al. 2023), LoRA.

Two things make it faster than a generic trainer at the same maths: the prompt is read once
for all of its answers (its keys and values are reused, gradients flow back through them), and
each distinct answer once for all of its pairs; and batches group examples of similar length.

After training, the mean and spread of the rewards on the training answers are stored with the
model (`alignloop_reward.json`), so the policy step sees rewards of about zero mean, unit scale.

    python -m worker.training.reward_model --data pairs.jsonl --base models/base --out models/rm-1
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DynamicCache,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)

from app.pairs import HELD_OUT, Pair
from app.round_config import RewardConfig
from worker.training import distributed
from worker.training.checkpoints import (
    atomic_directory,
    dtype_for,
    from_folder,
    resolve_device,
    training_dtype,
    with_lora,
    write_pretrained,
)
from worker.training.cli import (
    PAIRS,
    fail,
    parse_settings,
    read_pairs,
    step_bar,
    trainer_parser,
)
from worker.training.data import Messages, PreferenceBatch, PreferenceBatcher, encode_turn
from worker.training.optimisation import autocast, optimiser_step, planned_steps, record_step

log = logging.getLogger(__name__)

NORMALIZATION_FILE = "alignloop_reward.json"


@dataclass
class RewardReport:
    train_pairs: int
    eval_pairs: int
    steps: int = 0
    seconds: float = 0.0
    """Training time: the optimisation loop without its held-out evaluations."""
    eval_seconds: float = 0.0
    pairs_per_second: float = 0.0
    eval_accuracy: float | None = None
    eval_loss: float | None = None
    calibration_error: float | None = None
    accuracy_by_agreement: dict[str, float] = field(default_factory=dict)
    reward_mean: float = 0.0
    reward_std: float = 1.0
    curve: list[dict[str, float]] = field(default_factory=list)
    """Per optimiser step: step, loss, learning rate; per evaluation: eval accuracy and loss."""


# --- scoring -------------------------------------------------------------------------------------


def load_reward_model(
    base: str | Path, device: torch.device, *, dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A reward model from `base`: a saved reward model, or a policy that gets a fresh head."""
    tokenizer = from_folder(AutoTokenizer, base)
    model = from_folder(
        AutoModelForSequenceClassification, base, num_labels=1, dtype=dtype or torch.float32
    )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    return model.to(device), tokenizer


def model_parts(model: PreTrainedModel) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The transformer and the head of a model (or of the model inside a peft wrapper): the
    one-output `score` of a reward model, else the language-model head."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = (
        getattr(inner, "score", None)
        or getattr(inner, "classifier", None)
        or inner.get_output_embeddings()
    )
    if head is None:
        raise TypeError(f"{type(inner).__name__} has no head")
    return getattr(inner, inner.base_model_prefix), head


def shared_prefix_hidden(
    backbone: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    owner: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states of responses that share prompts: each (left-padded) prompt is run once
    and its keys and values are reused, gradients included, by every response it owns
    (`owner[r]` is the prompt row of response r). Returns the last prompt token's state for
    each response `(R, H)` and the responses' own states `(R, L, H)`."""
    cache = DynamicCache()
    prompt_hidden = backbone(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
        cache=cache,
        use_cache=True,
    ).last_hidden_state
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, owner)
        layer.values = layer.values.index_select(0, owner)
    prompt_lengths = prompt_mask.sum(-1).index_select(0, owner)  # (R,)
    positions = prompt_lengths.unsqueeze(1) + torch.arange(
        response_mask.shape[1], device=response_mask.device
    )
    hidden = backbone(
        input_ids=response_ids,
        attention_mask=torch.cat([prompt_mask.index_select(0, owner), response_mask], dim=1),
        position_ids=positions,
        cache=cache,
        use_cache=True,
    ).last_hidden_state
    return prompt_hidden[:, -1].index_select(0, owner), hidden


def shared_prefix_rewards(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One reward per response, read by the head at the response's last token, with each
    prompt run once for all of its responses."""
    backbone, head = model_parts(model)
    response_mask = batch["response_mask"]
    _, hidden = shared_prefix_hidden(
        backbone,
        batch["prompt_ids"],
        batch["prompt_mask"],
        batch["response_prompt"],
        batch["response_ids"],
        response_mask,
    )
    last = response_mask.sum(-1) - 1  # (R,) right padding: the last real token
    final = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (R, H)
    return head(final).squeeze(-1).float()


def pair_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    *,
    target: torch.Tensor,
    margin: torch.Tensor,
    weight: torch.Tensor,
    center_coefficient: float = 0.0,
    totals: tuple[float, int] | None = None,
) -> torch.Tensor:
    """Weighted Bradley-Terry loss: `-[t log s(d) + (1 - t) log s(-d)]`, d = r_c - r_r - margin,
    plus the optional centring penalty. With t = 1 and no margin this is -log sigmoid(r_c - r_r).
    `totals`, the total weight and number of pairs of a whole step, make this one micro-batch's
    share of the step's loss."""
    weight_total, count = totals if totals is not None else (weight.sum(), len(weight))
    difference = chosen - rejected - margin
    losses = -(target * F.logsigmoid(difference) + (1 - target) * F.logsigmoid(-difference))
    loss = (losses * weight).sum() / weight_total
    if center_coefficient:
        loss = loss + center_coefficient * ((chosen + rejected) ** 2).sum() / count
    return loss


# --- training ------------------------------------------------------------------------------------


def train_reward_model(
    pairs: Sequence[Pair],
    base: str | Path,
    config: RewardConfig,
    *,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, RewardReport]:
    """Train on the `train` pairs, evaluate on the `eval` pairs, return the best model."""
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    model, tokenizer = load_reward_model(
        base, device, dtype=training_dtype(device, lora=config.lora)
    )
    if config.lora:
        model = with_lora(
            model, task_type="SEQ_CLS", rank=config.lora_rank, top_layers=config.lora_layers
        )
    train = [pair for pair in pairs if pair.split == "train"]
    held_out = [pair for pair in pairs if pair.split == HELD_OUT]
    report = RewardReport(train_pairs=len(train), eval_pairs=len(held_out))
    if not train:
        raise ValueError("no training pairs")
    batcher = PreferenceBatcher(train, tokenizer, max_length=config.max_length)
    eval_batcher = PreferenceBatcher(held_out, tokenizer, max_length=config.max_length)
    pad_id = model.config.pad_token_id
    steps_per_epoch = math.ceil(
        sum(1 for _ in batcher.batches(config.batch_pairs, shuffle=False))
        / config.gradient_accumulation
    )
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable,
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    total_steps = steps_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_steps), total_steps
    )
    evaluate_every = max(1, steps_per_epoch // max(1, config.evaluations_per_epoch))
    best: tuple[float, dict] | None = None
    patience = config.early_stopping_patience
    started, trained_pairs = time.perf_counter(), 0
    model.train()
    for epoch in range(config.epochs):
        micro = 0
        for batch in batcher.batches(config.batch_pairs, shuffle=True, seed=config.seed + epoch):
            # 1. the batch's loss and its gradients, a micro-batch of its pairs at a time
            # (this process's part of the batch, when several train together)
            mine = batch.subset(distributed.part(batch.size))
            loss = sum(
                _backward(model, part, config, pad_id, device, (sum(batch.weight), batch.size))
                for part in mine.micro_batches(config.micro_batch_tokens)
            )
            trained_pairs += batch.size
            micro += 1
            if micro % config.gradient_accumulation:
                continue
            # 2. optimiser step on all processes' gradients, now and then a held-out evaluation
            distributed.sum_gradients(trainable)
            loss = distributed.sum_of(loss)
            optimiser_step(
                list(model.parameters()),
                optimizer,
                max_grad_norm=config.max_grad_norm,
                scheduler=scheduler,
            )
            point = record_step(report.curve, loss=loss, scheduler=scheduler, on_step=on_step)
            report.steps = point["step"]
            # (every process evaluates all held-out pairs: the same weights give the same
            # accuracy, so all of them stop at the same step without a message)
            if held_out and report.steps % evaluate_every == 0:
                evaluation_started = time.perf_counter()
                accuracy = _evaluate_into(model, eval_batcher, config, device, report)
                if best is None or accuracy > best[0]:
                    best = (accuracy, _trainable_state(model))
                    patience = config.early_stopping_patience
                else:
                    patience -= 1
                report.eval_seconds += time.perf_counter() - evaluation_started
                if patience <= 0:
                    break
        if patience <= 0:
            log.info("early stopping after %d steps", report.steps)
            break
    report.seconds = time.perf_counter() - started - report.eval_seconds
    report.pairs_per_second = trained_pairs / report.seconds
    if best is not None:
        model.load_state_dict(best[1], strict=False)
    if held_out:
        _evaluate_into(model, eval_batcher, config, device, report)
    if config.lora:
        model = model.merge_and_unload()
    report.reward_mean, report.reward_std = _reward_statistics(model, batcher, config, device)
    model.eval()
    return model, tokenizer, report


def _backward(
    model: PreTrainedModel,
    part: PreferenceBatch,
    config: RewardConfig,
    pad_id: int,
    device: torch.device,
    totals: tuple[float, int],
) -> float:
    """Backpropagate one micro-batch's share of its step's loss (`totals`: the step's total
    weight and pairs); that share."""
    tensors = part.tensors(pad_id, device)
    with autocast(device):
        rewards = shared_prefix_rewards(model, tensors)
    loss = pair_loss(
        rewards[tensors["chosen"]],
        rewards[tensors["rejected"]],
        target=tensors["target"],
        margin=tensors["margin"] if config.margin else torch.zeros_like(tensors["margin"]),
        weight=tensors["weight"],
        center_coefficient=config.center_coefficient,
        totals=totals,
    )
    (loss / config.gradient_accumulation).backward()
    return loss.item()


def _trainable_state(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """A copy of the weights that train (with LoRA, the adapters and head only: a few MB
    rather than a second copy of the model)."""
    return {
        name: parameter.detach().clone()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad
    }


@torch.no_grad()
def _scored_pairs(
    model: PreTrainedModel, batcher: PreferenceBatcher, config: RewardConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, list[PreferenceBatch]]:
    was_training = model.training
    model.eval()
    chosen, rejected, batches = [], [], []
    for batch in batcher.batches(config.batch_pairs, shuffle=False):
        tensors = batch.tensors(model.config.pad_token_id, device)
        with autocast(device):
            rewards = shared_prefix_rewards(model, tensors)
        chosen.append(rewards[tensors["chosen"]])
        rejected.append(rewards[tensors["rejected"]])
        batches.append(batch)
    model.train(was_training)
    return torch.cat(chosen), torch.cat(rejected), batches


def _evaluate_into(
    model: PreTrainedModel,
    batcher: PreferenceBatcher,
    config: RewardConfig,
    device: torch.device,
    report: RewardReport,
) -> float:
    chosen, rejected, batches = _scored_pairs(model, batcher, config, device)
    metrics = preference_metrics(
        chosen,
        rejected,
        [value for batch in batches for value in batch.target],
        [value for batch in batches for value in batch.agreement],
    )
    report.eval_accuracy = metrics["accuracy"]
    report.eval_loss = metrics["loss"]
    report.calibration_error = metrics["calibration_error"]
    report.accuracy_by_agreement = metrics["accuracy_by_agreement"]
    report.curve.append(
        {"step": report.steps, "eval_accuracy": metrics["accuracy"], "eval_loss": metrics["loss"]}
    )
    return metrics["accuracy"]


def preference_metrics(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    targets: Sequence[float],
    agreements: Sequence[float | None],
    *,
    bins: int = 10,
) -> dict:
    """Accuracy on strict pairs (ties are not right or wrong), loss, expected calibration
    error of sigmoid(r_c - r_r), and accuracy grouped by how many raters agreed."""
    target = torch.tensor(targets, dtype=torch.float32)
    difference = (chosen - rejected).float().cpu()
    strict = target == 1.0
    correct = (difference > 0)[strict].float()
    probability = torch.sigmoid(difference[strict])
    calibration = 0.0
    for low in range(bins):
        in_bin = (probability >= low / bins) & (probability < (low + 1) / bins)
        if in_bin.any():
            # the chosen answer is always the right one here, so observed frequency is 1
            calibration += in_bin.float().mean().item() * abs(
                1.0 - probability[in_bin].mean().item()
            )
    by_agreement: dict[str, list[float]] = {}
    strict_agreements = [
        agreement
        for agreement, is_strict in zip(agreements, strict.tolist(), strict=True)
        if is_strict
    ]
    for value, agreement in zip(correct.tolist(), strict_agreements, strict=True):
        label = "unanimous" if agreement is None or agreement == 1.0 else "split"
        by_agreement.setdefault(label, []).append(value)
    loss = -(target * F.logsigmoid(difference) + (1 - target) * F.logsigmoid(-difference)).mean()
    return {
        "accuracy": correct.mean().item() if len(correct) else float("nan"),
        "loss": loss.item(),
        "calibration_error": calibration,
        "accuracy_by_agreement": {
            label: sum(values) / len(values) for label, values in by_agreement.items()
        },
    }


def _reward_statistics(
    model: PreTrainedModel, batcher: PreferenceBatcher, config: RewardConfig, device: torch.device
) -> tuple[float, float]:
    chosen, rejected, _ = _scored_pairs(model, batcher, config, device)
    rewards = torch.cat([chosen, rejected])
    return rewards.mean().item(), max(rewards.std().item(), 1e-6)


class RewardScorer:
    """A trained reward model as the policy step reads it: normalised scores for answers
    (raw ones with `normalize=False`).

    Answers are encoded exactly as in training (`encode_turn`), each prompt read once. Given
    `adapted`, a peft model over the reward model at `path` (PPO's LoRA critic), the scorer
    reads that model's weights with its adapters off instead of holding a second copy."""

    def __init__(
        self,
        path: Path,
        device: torch.device,
        *,
        max_length: int = 1024,
        normalize: bool = True,
        adapted: PreTrainedModel | None = None,
    ) -> None:
        if adapted is None:
            self.model, self.tokenizer = load_reward_model(path, device, dtype=dtype_for(device))
            self.model.eval().requires_grad_(False)
        else:
            self.model, self.tokenizer = adapted, from_folder(AutoTokenizer, path)
        self.adapted = adapted is not None
        self.mean, self.std = normalization_of(path) if normalize else (0.0, 1.0)
        self.device, self.max_length = device, max_length

    @torch.no_grad()
    def score(self, conversations: Sequence[Messages], answers: Sequence[str]) -> torch.Tensor:
        """`(answers,)` normalised rewards; answer i replies to conversation i."""
        batch = PreferenceBatch.empty()
        prompt_rows: dict[tuple, int] = {}
        for messages, answer in zip(conversations, answers, strict=True):
            prompt, answer_ids = encode_turn(
                self.tokenizer, messages, answer, max_length=self.max_length
            )
            key = tuple(prompt)
            if key not in prompt_rows:
                prompt_rows[key] = len(batch.prompt_ids)
                batch.prompt_ids.append(prompt)
            batch.response_ids.append(answer_ids)
            batch.response_prompt.append(prompt_rows[key])
        adapters_off = self.model.disable_adapter() if self.adapted else contextlib.nullcontext()
        with adapters_off, autocast(self.device):
            rewards = shared_prefix_rewards(
                self.model, batch.tensors(self.model.config.pad_token_id, self.device)
            )
        return (rewards - self.mean) / self.std


# --- saving and loading --------------------------------------------------------------------------


def save_reward_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, report: RewardReport, path: Path
) -> Path:
    """Write the model, its tokenizer and its normalisation constants atomically."""
    with atomic_directory(path) as tmp:
        write_pretrained(tmp, model, tokenizer)
        normalization = {"mean": report.reward_mean, "std": report.reward_std}
        (tmp / NORMALIZATION_FILE).write_text(json.dumps(normalization))
    return path


def normalization_of(path: Path) -> tuple[float, float]:
    """The (mean, std) stored with a reward model; (0, 1) for one saved without them."""
    file = Path(path) / NORMALIZATION_FILE
    if not file.is_file():
        return 0.0, 1.0
    values = json.loads(file.read_text())
    return float(values["mean"]), float(values["std"])


def report_metrics(report: RewardReport) -> dict:
    """The report without its curve, as stored on the model version."""
    metrics = asdict(report)
    metrics.pop("curve")
    return metrics


# --- command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = trainer_parser(
        __spec__.name,
        "Train a reward model on preference pairs.",
        data=PAIRS,
        base="a policy or reward model folder",
    )
    args, config = parse_settings(parser, RewardConfig, argv)
    pairs = read_pairs(args.data)
    train = sum(pair.split == "train" for pair in pairs)
    if not train:
        fail(f"{args.data} holds no training pairs (split train)")
    steps = planned_steps(config.epochs, train, config.batch_pairs)
    with step_bar(steps, "reward model", lines=args.step_lines) as step:
        model, tokenizer, report = train_reward_model(pairs, args.base, config, on_step=step)
    if distributed.is_main():
        save_reward_model(model, tokenizer, report, args.out)
        print(json.dumps(asdict(report), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
