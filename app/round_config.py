"""What a training round and each trainer can be told: typed settings with their defaults, the
presets a round starts from, and the check of an admin's overrides.

The contract between the tiers that read a round's configuration: the web checks an admin's
overrides against it (a 422 for an unknown setting) and stores the result as `Round.config`;
the worker parses that once into a `RoundConfig` and hands each trainer its section. Plain
dataclasses, free of torch and of the database, so that either side, and a trainer run on
files (`python -m worker.training.ppo`), reads it without the other's libraries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import UnionType
from typing import Any, Literal, get_args, get_origin, get_type_hints

from app.errors import InvalidInput

# --- the trainers ---------------------------------------------------------------------------------


@dataclass
class TrainerConfig:
    """Settings every trainer shares."""

    learning_rate: float = 1e-5
    """AdamW's peak learning rate."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this norm before each optimiser step."""
    lora: bool = False
    """Train LoRA adapters (peft; Hu et al. 2021) instead of all weights; merged on save."""
    lora_rank: int = 16
    """Rank of the LoRA adapters (their alpha is twice this)."""
    lora_layers: int = 0
    """Adapt only the top this many transformer blocks (0: all): nothing below them runs
    backward, which makes a step far cheaper in time and memory."""
    seed: int = 0
    """Seeds sampling, shuffling and initialisation: the same data and seed train the same."""
    device: str = "auto"
    """`auto` (CUDA when there is one), `cpu` or `cuda[:N]`; bf16 on CUDA, fp32 on CPU."""


@dataclass
class EpochsConfig(TrainerConfig):
    """Settings of the trainers that pass over a fixed data set with a learning-rate schedule
    (reward model, SFT)."""

    epochs: int = 2
    """Passes over the data (a reward model's early stopping may end sooner)."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay."""
    warmup_ratio: float = 0.1
    """Share of the steps spent warming the learning rate up (then it decays linearly)."""
    max_length: int = 512
    """Tokens of prompt plus answer; the prompt's start is dropped first."""


@dataclass
class RewardConfig(EpochsConfig):
    """A Bradley-Terry reward model on the raters' pairs (InstructGPT, Ouyang et al. 2022)."""

    batch_pairs: int = 8
    """Pairs per batch; a ranking's pairs are never split across batches."""
    gradient_accumulation: int = 1
    """Batches per optimiser step."""
    micro_batch_tokens: int = 1024
    """Padded tokens run through the model at once: a batch runs in micro-batches of this
    size whose gradients add up, the same step in bounded memory (as DPOConfig's)."""
    margin: bool = True
    """Use the pairs' margins (from the rater's strength) in the loss (Llama 2, Touvron et al.
    2023)."""
    center_coefficient: float = 0.0
    """Weight of the penalty on (r_chosen + r_rejected)^2 that keeps rewards near zero
    (Eisenstein et al. 2023)."""
    early_stopping_patience: int = 2
    """Held-out evaluations without a better accuracy before training stops."""
    evaluations_per_epoch: int = 1
    """Held-out evaluations per pass over the training pairs."""


@dataclass
class SFTConfig(EpochsConfig):
    """Supervised fine-tuning on the answers raters wrote."""

    batch_size: int = 4
    """Demonstrations per optimiser step."""


@dataclass
class PolicyConfig(TrainerConfig):
    """Settings every policy optimiser shares."""

    learning_rate: float = 1e-6
    """AdamW's learning rate (constant: the policy takes few steps a round)."""
    beta: float = 0.05
    """Weight of the KL penalty towards the reference policy (the starting value when PPO
    adapts it)."""
    max_new_tokens: int = 48
    """Longest answer sampled during training."""
    temperature: float = 1.0
    """Sampling temperature of the training answers (1: the policy's own distribution)."""
    top_p: float = 1.0
    """Nucleus sampling of the training answers (1: off)."""
    max_prompt_tokens: int = 512
    """Longer prompts lose their start."""
    micro_batch_tokens: int = 1024
    """Padded prompt and answer tokens run through the model at once with gradients; a step's
    batch runs in micro-batches of this size whose gradients add up, the same step in bounded
    memory (activations kept for the backward pass grow with the tokens of a forward pass:
    about 0.6 MB a token with LoRA on the top 8 blocks of SmolLM2-135M; a DPO step on 8 pairs
    of 500-token answers took 4.1 GB above the process at once, 1.9 GB at 2048 tokens, 1.3 GB
    at 1024, in the same time)."""


@dataclass
class OnlineConfig(PolicyConfig):
    """Settings of the optimisers that sample from the policy as they go (PPO, RLOO)."""

    steps: int = 8
    """Optimisation steps; each samples fresh answers."""
    prompts_per_step: int = 8
    """Prompts sampled per step (the batch)."""
    missing_eos_penalty: float = 1.0
    """Subtracted from the score of an answer cut off at `max_new_tokens`."""
    normalize_rewards: bool = True
    """Scale reward-model scores to zero mean and unit spread (the statistics stored with
    the reward model); off, the raw head outputs are the rewards."""


@dataclass
class PPOConfig(OnlineConfig):
    """PPO with a learnt critic (Schulman et al. 2017), as InstructGPT applies it to language
    models (Ouyang et al. 2022)."""

    ppo_epochs: int = 2
    """Passes over each step's answers."""
    minibatch_size: int = 4
    """Answers per optimiser step within a pass."""
    clip: float = 0.2
    """PPO's ratio clip: the policy loss ignores ratios beyond 1 ± this."""
    value_clip: float = 0.2
    """The value loss ignores values that moved further than this from the sampled ones."""
    value_learning_rate: float = 1e-5
    """The critic's learning rate."""
    value_coefficient: float = 0.5
    """Weight of the value loss against the policy loss."""
    gamma: float = 1.0
    """Discount per token (1: the answer's end counts as much as its start)."""
    lam: float = 0.95
    """GAE's lambda (Schulman et al. 2016): lower trusts the critic more."""
    kl_target: float | None = 6.0
    """Summed KL per answer that beta steers towards (Ziegler et al. 2019); None keeps beta
    fixed."""
    kl_horizon: int = 10_000
    """Answers over which beta's adaptation reaches its target (Ziegler et al. 2019)."""


@dataclass
class RLOOConfig(OnlineConfig):
    """REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024): no critic."""

    samples_per_prompt: int = 2
    """Answers sampled per prompt (k); each answer's baseline is the mean of the others'."""


@dataclass
class DPOConfig(PolicyConfig):
    """Direct preference optimisation on the raters' pairs (Rafailov et al. 2023)."""

    learning_rate: float = 5e-7
    """AdamW's learning rate."""
    beta: float = 0.1
    """DPO's temperature: how far from the reference the policy may move for a pair."""
    epochs: int = 1
    """Passes over the training pairs."""
    batch_pairs: int = 8
    """Pairs per optimiser step."""
    label_smoothing: float = 0.0
    """Probability that a pair's label is wrong (conservative DPO, Mitchell 2023)."""
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


POLICY_CONFIGS: dict[str, type[PolicyConfig]] = {
    "ppo": PPOConfig,
    "rloo": RLOOConfig,
    "dpo": DPOConfig,
}
"""The settings of each policy algorithm (`Round.algorithm`)."""


# --- the round's own sections ---------------------------------------------------------------------


@dataclass
class SnapshotConfig:
    """Which judgements the round trains on."""

    ties: Literal["skip", "half"] = "skip"
    """A tie in a ranking is left out, or trains as a pair with target 0.5."""
    train_pairs: Literal["new", "all"] = "all"
    """Train on the pairs judged since the parent policy's round (on-policy, as iterative DPO
    and RLHF do: Xu et al. 2023, Touvron et al. 2023), or on every pair."""
    min_pairs: int = 1
    """Fewest training pairs the round starts with."""
    up_to_judgement_id: int | None = None
    """The last judgement in the snapshot (set by the snapshot stage)."""
    train_after_judgement_id: int | None = None
    """With `train_pairs: new`, the training pairs are judged after this one (set by the
    snapshot stage)."""


@dataclass
class RoundSFTConfig(SFTConfig):
    """The round's SFT stage: the trainer's settings, and when to run it at all."""

    min_demonstrations: int = 16
    """New answers written by raters the stage waits for; with fewer it is skipped."""

    def trainer_settings(self) -> SFTConfig:
        """The settings the trainer reads, without when the stage runs it."""
        return SFTConfig(**{field.name: getattr(self, field.name) for field in fields(SFTConfig)})


@dataclass
class EvaluationConfig:
    """How the evaluate stage compares the new policy with its parent."""

    prompts: int = 8
    """Held-out prompts answered by both policies."""
    samples: int = 1
    """Answers per prompt and policy."""
    max_new_tokens: int = 48
    """Longest answer sampled."""
    temperature: float = 0.0
    """Sampling temperature (0: greedy)."""
    top_p: float = 1.0
    """Nucleus sampling (1: off)."""
    seed: int | None = None
    """Seeds the sampling (None: the round's id)."""
    ab_prompts: int = 0
    """Prompts sent to the raters as blind A/B tasks between the two policies."""


@dataclass
class PromotionConfig:
    """When the new policy is served without an admin: the gates auto-promotion passes."""

    auto: bool = False
    """Promote the new policy when the gates pass (else an admin decides)."""
    min_win_rate: float = 0.5
    """The reward model's win rate of the new policy over its parent must reach this."""
    max_kl: float | None = None
    """The new policy's KL to its parent must not exceed this (None: no limit)."""
    min_human_win_rate: float | None = None
    """Also wait for the raters' blind A/B verdict, whose lower bound must reach this."""
    min_human_judgements: int = 20
    """A/B verdicts the human gate waits for."""


@dataclass
class RoundConfig:
    """A round's configuration, parsed once from `Round.config`."""

    snapshot: SnapshotConfig
    sft: RoundSFTConfig
    reward_model: RewardConfig
    policy: PolicyConfig
    evaluation: EvaluationConfig
    promotion: PromotionConfig

    @classmethod
    def parse(
        cls,
        algorithm: str,
        stored: Mapping[str, Mapping[str, Any]],
        *,
        device: str = "auto",
        policy_seed: int = 0,
    ) -> RoundConfig:
        """The typed form of `stored` (as `round_config` made it), with the worker's `device`
        for the trainers and `policy_seed` (a round's id: each round samples afresh) for the
        policy where `stored` is silent."""
        trainer_defaults = {"device": device}
        return cls(
            snapshot=build_config(SnapshotConfig, stored.get("snapshot", {})),
            sft=build_config(RoundSFTConfig, stored.get("sft", {}), **trainer_defaults),
            reward_model=build_config(
                RewardConfig, stored.get("reward_model", {}), **trainer_defaults
            ),
            policy=build_config(
                POLICY_CONFIGS[algorithm],
                stored.get("policy", {}),
                **trainer_defaults,
                seed=policy_seed,
            ),
            evaluation=build_config(EvaluationConfig, stored.get("evaluation", {})),
            promotion=build_config(PromotionConfig, stored.get("promotion", {})),
        )


# --- presets --------------------------------------------------------------------------------------

LORA_TOP = {"lora": True, "lora_rank": 16, "lora_layers": 8}
# LoRA (Hu et al. 2021) on the top 8 of SmolLM2-135M's 30 blocks: nothing below them runs
# backward, so a step costs little more than a forward pass, in time and memory, and the
# reference policy is the same weights with the adapters off. Reward-model training on the
# `concise` rule's pairs ran at 0.86 pairs/s against 0.25 with LoRA on every block.

NEW_PAIRS = {"ties": "skip", "train_pairs": "new"}
# Each round trains on the pairs judged since its parent's round: the parent has learnt the
# older ones, and the new answers are the parent's own, so the data stays on-policy as in
# iterative DPO and RLHF (Xu et al. 2023; Touvron et al. 2023), and a round costs the same
# however much has been judged before it. The reward model goes on from the parent round's.

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # SmolLM2-135M on 2 CPU cores: a round, candidate generation included, within about 15
    # minutes and 3 GB (bench/alignment.py, bench/RESULTS.md).
    "quick": {
        # At least 32 training pairs: four reward-model batches. Fewer fit noise, and the
        # held-out accuracy is then a figure over three or four pairs.
        "snapshot": {**NEW_PAIRS, "min_pairs": 32},
        "sft": {
            "min_demonstrations": 16,
            "epochs": 1,
            "batch_size": 4,
            "max_length": 384,
            "learning_rate": 5e-4,
            **LORA_TOP,
        },
        # One epoch, as InstructGPT trains its reward model (Ouyang et al. 2022): more overfits.
        # LoRA at 1e-3: 1e-4 reached 0.66 held-out accuracy on 150 rule-labelled pairs and
        # 0.48-0.63 in bench/alignment.py; 1e-3 reached 1.00
        # (tests/worker/training/test_reward_learning).
        "reward_model": {
            "epochs": 1,
            "batch_pairs": 8,
            "learning_rate": 1e-3,
            "max_length": 384,
            **LORA_TOP,
        },
        "evaluation": {
            "prompts": 12,
            "samples": 2,
            "max_new_tokens": 128,
            "temperature": 0.8,
            "top_p": 0.95,
            "ab_prompts": 8,
        },
        "promotion": {"auto": False, "min_win_rate": 0.55, "max_kl": 20.0},
    },
    # A GPU worker and a 0.5-8B model: more data per round, adapters on every block, bf16.
    # Not yet measured on a GPU (no bench run has had one): the rates are the references'.
    "standard": {
        "snapshot": {**NEW_PAIRS, "min_pairs": 128},
        # QLoRA's fine-tuning of 7-13B models (Dettmers et al. 2023): LoRA on every linear
        # layer at 2e-4.
        "sft": {
            "min_demonstrations": 64,
            "epochs": 2,
            "batch_size": 8,
            "learning_rate": 2e-4,
            "lora": True,
        },
        # One epoch (InstructGPT, Ouyang et al. 2022).
        "reward_model": {"epochs": 1, "batch_pairs": 16, "learning_rate": 5e-5, "lora": True},
        "evaluation": {
            "prompts": 64,
            "samples": 2,
            "max_new_tokens": 256,
            "temperature": 0.8,
            "top_p": 0.95,
            "ab_prompts": 32,
        },
        "promotion": {"auto": False, "min_win_rate": 0.55, "max_kl": 20.0},
    },
}
POLICY_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        # DPO (Rafailov et al. 2023) with beta 0.1, the paper's; LoRA wants a learning rate
        # about 100x full fine-tuning's (Hu et al. 2021): 1e-3 moved the policy where 1e-4 did
        # not (bench/alignment_study.py). Two epochs over the round's pairs. The NLL of the
        # answers raters wrote, at weight 1 (RPO's term, Pang et al. 2024, on rewrites only):
        # on the refusal rule, where most wanted answers are rewrites, RPO took the win rate
        # from 0.58 to 0.76; on `concise`, where the chosen answers are the base's own long
        # ones, RPO on every pair held it at 0.70 where DPO reached 0.87.
        "dpo": {
            "epochs": 2,
            "batch_pairs": 8,
            "learning_rate": 1e-3,
            "beta": 0.1,
            "nll_coefficient": 1.0,
            "nll_pairs": "rewrites",
            **LORA_TOP,
        },
        # RLOO (Ahmadian et al. 2024) with k = 2; rollouts of 128 tokens, served answers longer.
        "rloo": {
            "steps": 8,
            "prompts_per_step": 8,
            "samples_per_prompt": 2,
            "max_new_tokens": 128,
            "learning_rate": 1e-3,
            **LORA_TOP,
        },
        # PPO as in InstructGPT (Ouyang et al. 2022); a LoRA critic on the reward model.
        "ppo": {
            "steps": 8,
            "prompts_per_step": 8,
            "max_new_tokens": 128,
            "learning_rate": 1e-3,
            "value_learning_rate": 1e-3,
            **LORA_TOP,
        },
    },
    # Not yet measured on a GPU. The same algorithms as `quick`, at QLoRA's 2e-4 for LoRA on
    # every block (Dettmers et al. 2023); online steps of 32 prompts (TRL's TL;DR RLOO and PPO
    # examples use batches of 64) and RLOO with k = 4 (Ahmadian et al. 2024 compare 2 and 4).
    "standard": {
        "dpo": {
            "epochs": 2,
            "batch_pairs": 16,
            "learning_rate": 2e-4,
            "beta": 0.1,
            "nll_coefficient": 1.0,
            "nll_pairs": "rewrites",
            "lora": True,
        },
        "rloo": {
            "steps": 100,
            "prompts_per_step": 32,
            "samples_per_prompt": 4,
            "max_new_tokens": 256,
            "learning_rate": 2e-4,
            "lora": True,
        },
        "ppo": {
            "steps": 100,
            "prompts_per_step": 32,
            "max_new_tokens": 256,
            "learning_rate": 2e-4,
            "value_learning_rate": 2e-4,
            "lora": True,
        },
    },
}


def round_config(
    algorithm: str, preset: str, overrides: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The preset's settings with the admin's overrides, section by section, as a round
    stores them; unknown sections or settings, and values of the wrong type, are refused."""
    if preset not in PRESETS:
        raise InvalidInput(f"Unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    config = {section: dict(values) for section, values in PRESETS[preset].items()}
    config["policy"] = dict(POLICY_PRESETS[preset][algorithm])
    if unknown := set(overrides) - set(config):
        raise InvalidInput(f"Unknown override sections: {sorted(unknown)}")
    for section, values in overrides.items():
        config[section] |= values
    RoundConfig.parse(algorithm, config)
    return config


def preset_snapshot(preset: str) -> SnapshotConfig:
    """The snapshot settings a round of `preset` starts with, before any override."""
    return build_config(SnapshotConfig, PRESETS[preset]["snapshot"])


def build_config(kind: type, values: Mapping[str, Any], **defaults: Any):
    """`kind(**defaults, **values)`, refusing settings that `kind` does not have, values
    of another type than the setting's (an int does for a float), and values a setting of
    fixed choices does not offer."""
    known = {field.name for field in fields(kind)}
    if unknown := sorted(set(values) - known):
        raise InvalidInput(f"Unknown {kind.__name__} settings: {unknown}")
    hints = get_type_hints(kind)
    for name, value in values.items():
        if get_origin(hints[name]) is Literal:
            if value not in (choices := get_args(hints[name])):
                raise InvalidInput(
                    f"{kind.__name__} setting {name!r} must be one of {list(choices)}"
                )
        elif not _fits(value, _types(hints[name])):
            expected = " or ".join(kind.__name__ for kind in _types(hints[name]))
            raise InvalidInput(f"{kind.__name__} setting {name!r} must be of type {expected}")
    return kind(**{**defaults, **values})


def _types(hint: Any) -> tuple[type, ...]:
    """The types a setting's hint allows: `float | None` allows float and NoneType."""
    return get_args(hint) if isinstance(hint, UnionType) else (hint,)


def _fits(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # a bool is an int to Python, never to a setting
        return bool in allowed
    if isinstance(value, int) and float in allowed:
        return True
    return isinstance(value, allowed)
