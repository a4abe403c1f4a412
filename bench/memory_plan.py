"""The GPU memory each training stage of a preset needs, computed (not measured) from a model's
architecture: what to expect before a GPU is bought or lent.

For each stage of the preset's round, LoRA in bf16 as both presets train (the adapters and
their AdamW states are under 1% of the weights and left out), the peak is:

- weights: 2 bytes a parameter for each model the stage holds: the policy (whose reference is
  the same weights with the adapters off), and in PPO and RLOO the reward model (PPO's critic
  is adapters on it);
- the rollout's KV cache (PPO, RLOO): 2 (K and V) x layers x KV heads x head size x 2 bytes a
  token, for every row of a step (prompts x samples) at its longest (prompt plus answer);
- activations kept for the backward pass of one micro-batch (the trainers backpropagate a
  micro-batch at a time; SFT a whole batch): 2 bytes x (10 x hidden + 3 x MLP width) a token
  a layer, Korthikanti et al. (2022)'s count for attention whose scores are not stored
  (SDPA), with a gated MLP; logits are taken in checkpointed chunks and left out;
- the larger of the last two in PPO and RLOO, whose engine frees the rollout's cache before
  the update.

Add about 1 GiB for the CUDA context and the allocator's slack. With LoRA on the top blocks only
(the `quick` preset) the backward pass stops at the lowest adapted block and keeps fewer
activations than counted here. The architectures are the
models' published `config.json` values; `--config` computes for any other.

    .venv/bin/python bench/memory_plan.py [--preset standard] [--config path/config.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.round_config import (  # noqa: E402
    POLICY_PRESETS,
    PRESETS,
    DPOConfig,
    PPOConfig,
    RewardConfig,
    RLOOConfig,
    RoundSFTConfig,
)

GIB = 1024**3
BF16 = 2


@dataclass(frozen=True)
class Architecture:
    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool

    @classmethod
    def from_config(cls, path: Path) -> Architecture:
        """From a Hugging Face `config.json` of a Llama-like model (Llama, Qwen2, Mistral)."""
        config = json.loads(path.read_text())
        return cls(
            name=str(path.parent.name),
            layers=config["num_hidden_layers"],
            hidden=config["hidden_size"],
            intermediate=config["intermediate_size"],
            heads=config["num_attention_heads"],
            kv_heads=config.get("num_key_value_heads", config["num_attention_heads"]),
            vocab=config["vocab_size"],
            tied_embeddings=config.get("tie_word_embeddings", False),
        )

    @property
    def head_size(self) -> int:
        return self.hidden // self.heads

    @property
    def parameters(self) -> int:
        """Embeddings (and an untied output layer), attention and a gated MLP a layer; biases
        and norms, under 0.1%, left out."""
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * self.head_size
        return embeddings + self.layers * (attention + 3 * self.hidden * self.intermediate)

    def kv_bytes(self, tokens: int) -> int:
        return 2 * self.layers * self.kv_heads * self.head_size * BF16 * tokens

    def activation_bytes(self, tokens: int) -> int:
        return BF16 * (10 * self.hidden + 3 * self.intermediate) * self.layers * tokens


PUBLISHED = (  # the models' config.json values
    Architecture("SmolLM2-135M", 30, 576, 1536, 9, 3, 49152, True),
    Architecture("Qwen2.5-1.5B", 28, 1536, 8960, 12, 2, 151936, True),
    Architecture("Qwen2.5-7B", 28, 3584, 18944, 28, 4, 152064, False),
)


def stage_bytes(model: Architecture, preset: str) -> dict[str, int]:
    """The peak of each training stage of `preset` on `model`, in bytes."""
    weights = BF16 * model.parameters
    sft = RoundSFTConfig(**PRESETS[preset]["sft"]).trainer_settings()
    reward = RewardConfig(**PRESETS[preset]["reward_model"])
    dpo = DPOConfig(**POLICY_PRESETS[preset]["dpo"])
    peaks = {
        "SFT": weights + model.activation_bytes(sft.batch_size * sft.max_length),
        "reward model": weights + model.activation_bytes(reward.micro_batch_tokens),
        "DPO": weights + model.activation_bytes(dpo.micro_batch_tokens),
    }
    for name, kind, samples in (("RLOO", RLOOConfig, "samples_per_prompt"), ("PPO", PPOConfig, "")):
        config = kind(**POLICY_PRESETS[preset][name.lower()])
        rows = config.prompts_per_step * (getattr(config, samples) if samples else 1)
        rollout = model.kv_bytes(rows * (config.max_prompt_tokens + config.max_new_tokens))
        update = model.activation_bytes(config.micro_batch_tokens)
        peaks[name] = 2 * weights + max(rollout, update)
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="standard")
    parser.add_argument("--config", type=Path, action="append", help="a model's config.json")
    args = parser.parse_args()
    models = [Architecture.from_config(path) for path in args.config or []] or PUBLISHED
    stages = list(stage_bytes(models[0], args.preset))
    print(f"GPU memory of the `{args.preset}` preset's stages, computed, in GiB (bf16, LoRA)\n")
    print("| model | parameters | " + " | ".join(stages) + " |")
    print("|---" * (len(stages) + 2) + "|")
    for model in models:
        peaks = stage_bytes(model, args.preset)
        cells = " | ".join(f"{peaks[stage] / GIB:.1f}" for stage in stages)
        print(f"| {model.name} | {model.parameters / 1e9:.2f}B | {cells} |")


if __name__ == "__main__":
    main()
