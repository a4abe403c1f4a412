"""What each trainer can be told: its settings as plain dataclasses, with their defaults.

Kept free of torch, so that the web tier can check an admin's overrides (and answer 422 for an
unknown one) without loading a model library.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, fields
from typing import Any, Literal, get_args, get_origin, get_type_hints

from app.errors import InvalidInput


@dataclass
class RewardConfig:
    epochs: int = 2
    """Passes over the training pairs (early stopping may end sooner)."""
    batch_pairs: int = 8
    """Pairs per batch; a ranking's pairs are never split across batches."""
    gradient_accumulation: int = 1
    """Batches per optimiser step."""
    micro_batch_tokens: int = 1024
    """Padded tokens run through the model at once: a batch runs in micro-batches of this
    size whose gradients add up, the same step in bounded memory (as DPOConfig's)."""
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    """Share of the steps spent warming the learning rate up (then it decays linearly)."""
    max_grad_norm: float = 1.0
    max_length: int = 512
    """Tokens of prompt plus answer; the prompt's start is dropped first."""
    margin: bool = True
    """Use the pairs' margins (from the rater's strength) in the loss."""
    center_coefficient: float = 0.0
    """Weight of the penalty on (r_chosen + r_rejected)^2 that keeps rewards near zero."""
    lora: bool = False
    """Train LoRA adapters (peft) instead of all weights; merged into the saved model."""
    lora_rank: int = 16
    lora_layers: int = 0
    """Adapt only the top this many transformer blocks (0: all): nothing below them runs
    backward, which makes a step far cheaper in time and memory."""
    early_stopping_patience: int = 2
    """Held-out evaluations without a better accuracy before training stops."""
    evaluations_per_epoch: int = 1
    seed: int = 0
    device: str = "auto"


@dataclass
class SFTConfig:
    epochs: int = 2
    batch_size: int = 4
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    max_length: int = 512
    """Tokens of prompt plus answer; the prompt's start is dropped first."""
    lora: bool = False
    """Train LoRA adapters (peft) instead of all weights; merged into the saved model."""
    lora_rank: int = 16
    lora_layers: int = 0
    """Adapt only the top this many transformer blocks (0: all): nothing below them runs
    backward, which makes a step far cheaper in time and memory."""
    seed: int = 0
    device: str = "auto"


@dataclass
class PolicyConfig:
    """Settings every policy optimiser shares."""

    learning_rate: float = 1e-6
    beta: float = 0.05
    """Weight of the KL penalty (the starting value when PPO adapts it)."""
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    max_prompt_tokens: int = 512
    """Longer prompts lose their start."""
    max_grad_norm: float = 1.0
    lora: bool = False
    lora_rank: int = 16
    lora_layers: int = 0
    """Adapt only the top this many transformer blocks (0: all): nothing below them runs
    backward, which makes a step far cheaper in time and memory."""
    micro_batch_tokens: int = 1024
    """Padded prompt and answer tokens run through the model at once with gradients; a step's
    batch runs in micro-batches of this size whose gradients add up, the same step in bounded
    memory (activations kept for the backward pass grow with the tokens of a forward pass:
    about 0.6 MB a token with LoRA on the top 8 blocks of SmolLM2-135M; a DPO step on 8 pairs
    of 500-token answers took 4.1 GB above the process at once, 1.9 GB at 2048 tokens, 1.3 GB
    at 1024, in the same time)."""
    seed: int = 0
    device: str = "auto"


@dataclass
class OnlineConfig(PolicyConfig):
    """Settings of the optimisers that sample from the policy as they go (PPO, RLOO)."""

    steps: int = 8
    prompts_per_step: int = 8
    missing_eos_penalty: float = 1.0
    """Subtracted from the score of an answer cut off at `max_new_tokens`."""
    normalize_rewards: bool = True
    """Scale reward-model scores to zero mean and unit spread (the statistics stored with
    the reward model); off, the raw head outputs are the rewards."""


@dataclass
class PPOConfig(OnlineConfig):
    ppo_epochs: int = 2
    minibatch_size: int = 4
    clip: float = 0.2
    value_clip: float = 0.2
    value_learning_rate: float = 1e-5
    value_coefficient: float = 0.5
    gamma: float = 1.0
    lam: float = 0.95
    kl_target: float | None = 6.0
    """Summed KL per answer that beta steers towards; None keeps beta fixed."""
    kl_horizon: int = 10_000


@dataclass
class RLOOConfig(OnlineConfig):
    samples_per_prompt: int = 2


@dataclass
class DPOConfig(PolicyConfig):
    learning_rate: float = 5e-7
    beta: float = 0.1
    epochs: int = 1
    batch_pairs: int = 8
    label_smoothing: float = 0.0
    nll_coefficient: float = 0.0
    """Weight of the chosen answers' mean token negative log-likelihood added to the loss
    (RPO, Pang et al. 2024): the chosen answer gets likelier, not only likelier than the
    rejected one. 0 is plain DPO."""
    nll_pairs: Literal["all", "rewrites"] = "all"
    """The pairs whose chosen answer the NLL term trains on: all (RPO), or only those a rater
    wrote. A sampled answer is already the policy's own; a rewrite may be one it would never
    say, which DPO alone makes likelier than the rejected answer but not likely."""
    max_length: int = 512
    """Tokens of prompt plus answer; the prompt's start is dropped first."""


def build_config(kind: type, values: dict[str, Any], **defaults: Any):
    """`kind(**defaults, **values)`, refusing settings that `kind` does not have, values
    of another type than the setting's default (an int does for a float), and values a
    setting of fixed choices does not offer."""
    known = {field.name: field for field in fields(kind)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InvalidInput(f"Unknown {kind.__name__} settings: {unknown}")
    hints = get_type_hints(kind)
    for name, value in values.items():
        choices = get_args(hints[name]) if get_origin(hints[name]) is Literal else None
        if choices and value not in choices:
            raise InvalidInput(f"{kind.__name__} setting {name!r} must be one of {list(choices)}")
        if not _fits(value, known[name]):
            expected = type(known[name].default).__name__
            raise InvalidInput(f"{kind.__name__} setting {name!r} must be of type {expected}")
    return kind(**{**defaults, **values})


def _fits(value: Any, setting: Field) -> bool:
    default = setting.default
    if value is None:
        return "None" in str(setting.type)  # optional settings, such as a KL target
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))
