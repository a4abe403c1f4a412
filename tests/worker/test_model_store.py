"""The model store: atomic version folders, the tiny test model, and the bundled default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from sqlalchemy import func, select
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForSequenceClassification

from app.db import make_session_factory
from app.models import ModelKind, ModelVersion
from worker.model_store import (
    ABANDONED_AFTER_S,
    BASE_VERSION,
    ModelSourceError,
    ModelStore,
    remove_abandoned_writes,
)
from worker.training.checkpoints import (
    atomic_directory,
    dtype_for,
    resolve_device,
    training_dtype,
    with_lora,
)


def test_tiny_random_is_small_and_mostly_embedding(model_settings):
    model, tokenizer = ModelStore(model_settings).load_source("tiny-random")
    total = model.num_parameters()
    embedding = model.get_input_embeddings().weight.numel()
    assert total <= 5_000_000
    assert embedding / total > 0.8
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template


def test_tiny_random_is_the_same_model_every_time(model_settings):
    store = ModelStore(model_settings)
    first, _ = store.load_source("tiny-random")
    second, _ = store.load_source("tiny-random")
    assert torch.equal(first.lm_head.weight, second.lm_head.weight)


def test_a_saved_version_loads_back_identically(model_settings):
    store = ModelStore(model_settings)
    model, tokenizer = store.load_source("tiny-random")
    path = store.save("v1", model, tokenizer)
    assert (path / "model.safetensors").is_file()
    assert not any(path.parent.glob(".v1.*"))  # no temporary folder left behind
    loaded, loaded_tokenizer = store.load("v1", torch.device("cpu"))
    ids = loaded_tokenizer("Hello there", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, loaded(ids).logits)


def test_a_saved_version_keeps_the_fields_transformers_4_reads(model_settings):
    """transformers 4.57 (tried by hand: same tokens and logits) reads `rope_theta` at the top
    and has no `TokenizersBackend` class; 5 reads the same model from these files."""
    store = ModelStore(model_settings)
    model, tokenizer = store.load_source("tiny-random")
    path = store.save("v1", model, tokenizer)
    config = json.loads((path / "config.json").read_text())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"]
    tokenizer_config = json.loads((path / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_a_failed_write_leaves_no_folder(tmp_path):
    target = tmp_path / "models" / "v2"
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("crashed mid-write")
    assert not target.exists()
    assert list((tmp_path / "models").iterdir()) == []


def test_start_up_removes_the_writes_of_dead_processes_only(tmp_path):
    models = tmp_path / "models"
    script = (
        "import sys, time; from pathlib import Path\n"
        "from worker.training.checkpoints import atomic_directory\n"
        "with atomic_directory(Path(sys.argv[1])) as tmp:\n"
        "    (tmp / 'model.safetensors').write_bytes(b'half')\n"
        "    print(tmp, flush=True); time.sleep(60)"
    )
    killed = subprocess.Popen(
        [sys.executable, "-c", script, str(models / "round-1")], stdout=subprocess.PIPE, text=True
    )
    left_behind = Path(killed.stdout.readline().strip())
    killed.kill()
    killed.wait()
    old_foreign = models / ".round-2.elsewhere-pid7.abc123.tmp"
    new_foreign = models / ".round-3.elsewhere-pid7.def456.tmp"
    for folder in (old_foreign, new_foreign):
        folder.mkdir()
    stale = time.time() - ABANDONED_AFTER_S - 60
    os.utime(old_foreign, (stale, stale))
    with atomic_directory(models / "round-4") as ours:  # a live writer: this process
        removed = remove_abandoned_writes(models)
        assert ours.is_dir()
    assert sorted(removed) == sorted([left_behind, old_foreign])
    assert not left_behind.exists() and not old_foreign.exists() and new_foreign.is_dir()
    assert (models / "round-4").is_dir()


def test_an_existing_version_is_never_overwritten(model_settings):
    store = ModelStore(model_settings)
    model, tokenizer = store.load_source("tiny-random")
    store.save("v1", model, tokenizer)
    with pytest.raises(OSError):
        store.save("v1", model, tokenizer)


@pytest.mark.parametrize("name", ["../escape", "/abs", "a/b", "", ".hidden", "UPPER"])
def test_version_names_cannot_leave_the_store(model_settings, name):
    with pytest.raises(ValueError):
        ModelStore(model_settings).path_for(name)


def test_the_base_version_is_imported_and_registered_once(model_settings, committed_engine):
    store = ModelStore(model_settings)
    factory = make_session_factory(committed_engine)
    first = store.ensure_base_version(factory)
    second = store.ensure_base_version(factory)
    assert first.id == second.id and first.name == BASE_VERSION
    assert first.config["source"] == "tiny-random"
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(ModelVersion)) == 1
    assert (model_settings.models_dir / BASE_VERSION / "config.json").is_file()


def test_each_registered_version_gets_a_model_card_with_lineage_data_and_metrics(
    model_settings, committed_engine
):
    store = ModelStore(model_settings)
    factory = make_session_factory(committed_engine)
    base = store.ensure_base_version(factory)
    base_card = (model_settings.models_dir / BASE_VERSION / "README.md").read_text()
    assert "parent version: none" in base_card and "base model: `tiny-random`" in base_card
    assert "transformers>=4.57" in base_card
    (model_settings.models_dir / "sft-1").mkdir()
    with factory() as db:
        store.register(
            db,
            name="sft-1",
            kind=ModelKind.POLICY,
            path="sft-1",
            parent=db.get(ModelVersion, base.id),
            config={},
            metrics={"final_loss": 0.25},
            snapshot_sha256="ab" * 32,
            rater_count=3,
        )
        db.commit()
    card = (model_settings.models_dir / "sft-1" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert "parent version: base" in card and f"sha256 `{'ab' * 32}`" in card
    assert '"final_loss": 0.25' in card and "raters in the snapshot: 3" in card
    assert not list((model_settings.models_dir / "sft-1").glob(".*.tmp"))


def test_cpu_runs_in_float32_and_cuda_in_bfloat16():
    assert resolve_device("cpu").type == "cpu"
    assert dtype_for(torch.device("cpu")) == torch.float32
    assert dtype_for(torch.device("cuda")) == torch.bfloat16
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_lora_freezes_bfloat16_weights_on_cuda_and_trains_float32_adapters(model_settings):
    """A LoRA trainer on CUDA, emulated on the CPU: the frozen weights in bf16, adapters and
    the reward head in fp32, and a bf16-autocast step gives gradients to all of them."""
    assert training_dtype(torch.device("cuda"), lora=True) == torch.bfloat16
    assert training_dtype(torch.device("cuda"), lora=False) == torch.float32
    assert training_dtype(torch.device("cpu"), lora=True) == torch.float32
    causal, _ = ModelStore(model_settings).load_source("tiny-random")
    causal.config.num_labels = 1
    scorer = LlamaForSequenceClassification(causal.config).to(torch.bfloat16)
    adapted = with_lora(scorer, task_type="SEQ_CLS", rank=4, top_layers=1)
    trainable = {name: p for name, p in adapted.named_parameters() if p.requires_grad}
    assert any("score" in name for name in trainable) and any("lora" in n for n in trainable)
    assert all(parameter.dtype == torch.float32 for parameter in trainable.values())
    frozen = [p for p in adapted.parameters() if not p.requires_grad]
    assert frozen and all(parameter.dtype == torch.bfloat16 for parameter in frozen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        adapted(input_ids=torch.tensor([[5, 6, 7, 8]])).logits.float().sum().backward()
    assert all(parameter.grad is not None for parameter in trainable.values())


@pytest.mark.slow
def test_the_bundled_default_converts_and_answers(bundled_model_dir):
    loaded = AutoModelForCausalLM.from_pretrained(bundled_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir)
    assert 130_000_000 < loaded.num_parameters() < 140_000_000
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = loaded.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_a_hub_model_is_downloaded_at_a_pinned_commit(model_settings, monkeypatch):
    """Tokenizer and weights come from one commit: the configured one, or the one `main`
    points at when the model is first pulled; no network here, so both fail in words."""
    asked: list[str | None] = []

    def offline(model_id, *args, revision=None, **kwargs):
        asked.append(revision)
        raise OSError("no network")

    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", offline)
    commit = "0123456789abcdef0123456789abcdef01234567"
    store = ModelStore(model_settings.model_copy(update={"base_model_revision": commit}))
    with pytest.raises(ModelSourceError, match="HuggingFaceTB/SmolLM2-360M"):
        store.load_source("HuggingFaceTB/SmolLM2-360M")
    assert asked == [commit]
    with pytest.raises(ModelSourceError, match="ALIGNLOOP_BASE_MODEL_REVISION"):
        ModelStore(model_settings).load_source("HuggingFaceTB/SmolLM2-360M")
    assert asked == [commit]  # unresolvable: nothing was downloaded unpinned
