"""The memory plan (`bench/memory_plan.py`) counts what a model built from the same config holds:
its parameters (to the norms it leaves out) and the KV cache a forward pass keeps."""

from __future__ import annotations

import importlib.util
import json
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tests.test_layers import ROOT

spec = importlib.util.spec_from_file_location("memory_plan", ROOT / "bench" / "memory_plan.py")
memory_plan = sys.modules["memory_plan"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(memory_plan)

CONFIG = LlamaConfig(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=176,
    num_hidden_layers=3,
    num_attention_heads=8,
    num_key_value_heads=2,
    tie_word_embeddings=False,
)


def test_the_plan_counts_the_parameters_and_the_kv_cache_of_a_model(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG.to_dict()))
    architecture = memory_plan.Architecture.from_config(tmp_path / "config.json")
    model = LlamaForCausalLM(CONFIG).to(torch.bfloat16).eval()

    norms = sum(p.numel() for name, p in model.named_parameters() if "norm" in name)
    assert architecture.parameters == model.num_parameters() - norms

    tokens = 10
    with torch.no_grad():
        cache = model(torch.arange(tokens).unsqueeze(0), use_cache=True).past_key_values
    held = sum(
        tensor.numel() * tensor.element_size()
        for layer in cache.layers
        for tensor in (layer.keys, layer.values)
    )
    assert architecture.kv_bytes(tokens) == held


def test_the_published_models_have_their_published_sizes():
    sizes = {model.name: model.parameters / 1e9 for model in memory_plan.PUBLISHED}
    assert round(sizes["SmolLM2-135M"], 3) == 0.134
    assert round(sizes["Qwen2.5-1.5B"], 2) == 1.54
    assert round(sizes["Qwen2.5-7B"], 2) == 7.62
