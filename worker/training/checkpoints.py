"""Where a trainer's model lives and how it is written: the device and dtype it trains in,
LoRA adapters, and folders that appear on disk only once complete.

A checkpoint is a Hugging Face `save_pretrained` folder (safetensors) written to a temporary
sibling, fsynced and renamed into place, so a reader never sees half a model; the temporary
folder's name says which process writes it, so that an abandoned write can be found
(`worker.model_store.remove_abandoned_writes`).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from worker.training import distributed

if TYPE_CHECKING:
    from peft import LoraConfig

WRITER_SEPARATOR = "-pid"
"""Between the host and the process id of a temporary folder's writer."""


def resolve_device(setting: str = "auto") -> torch.device:
    """The configured device; of processes training together on CUDA (`cuda`, or `auto` on a
    machine with a GPU), each its own GPU: `cuda:<local rank>`."""
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    local = distributed.local_rank()
    if setting == "cuda" and local is not None:
        return torch.device("cuda", local)
    return torch.device(setting)


def dtype_for(device: torch.device) -> torch.dtype:
    """bf16 on CUDA; fp32 on CPU, where bf16 is slower on CPUs without AMX (most of ours)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def training_dtype(device: torch.device, *, lora: bool) -> torch.dtype:
    """The dtype a trainer loads its model in. Under LoRA the model's own weights are frozen,
    so on CUDA they load in bf16 (an 8B model's 32 GB become 16), while the adapters and a
    reward model's head train in fp32 (`with_lora`). Weights that train stay fp32: bf16 would
    round AdamW's small updates away, and autocast computes in bf16 all the same."""
    return dtype_for(device) if lora else torch.float32


def with_lora(
    model: PreTrainedModel, *, task_type: str, rank: int, top_layers: int = 0
) -> PreTrainedModel:
    """`model` with LoRA adapters (peft) on the linear layers of its top `top_layers`
    transformer blocks (0: all of them); only they (and a reward model's head) train, in
    fp32 whatever the dtype of the frozen weights.

    Adapting only the top blocks is what makes training affordable on a CPU: autograd keeps
    no activations and runs no backward pass below the lowest adapted block, so a step costs
    little more than a forward pass, and its memory is that of the top blocks only."""
    from peft import get_peft_model

    adapted = get_peft_model(
        model, lora_config(model, task_type=task_type, rank=rank, top_layers=top_layers)
    )
    for parameter in adapted.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    return adapted


def lora_config(
    model: PreTrainedModel, *, task_type: str, rank: int, top_layers: int = 0
) -> LoraConfig:
    """peft's `LoraConfig` of `with_lora`: rank `rank`, alpha twice that, on the linear layers
    of the top `top_layers` blocks of `model` (0: all of them)."""
    from peft import LoraConfig

    blocks = model.config.num_hidden_layers
    if not 0 < top_layers < blocks:
        targets: str | list[str] = "all-linear"
        layers = None
    else:  # peft picks blocks only by module name, so name the blocks' linear layers
        head = model.get_output_embeddings()
        targets = sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, module in model.named_modules()
                if isinstance(module, torch.nn.Linear)
                and module is not head
                and not name.endswith(("score", "classifier"))
            }
        )
        layers = list(range(blocks - top_layers, blocks))
    return LoraConfig(
        task_type=task_type,
        r=rank,
        lora_alpha=2 * rank,
        target_modules=targets,
        layers_to_transform=layers,
    )


def release_memory() -> None:
    """Give the memory of models that are gone back to the system: collect them, empty
    CUDA's cache, and ask glibc to return freed heap pages (it keeps them otherwise, and an
    idle worker would go on holding a stage's peak)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """A temporary folder beside `final`, fsynced and renamed to `final` when the block succeeds.
    Its name says which process writes it, so that `remove_abandoned_writes` can tell."""
    final.parent.mkdir(parents=True, exist_ok=True)
    writer = f"{socket.gethostname()}{WRITER_SEPARATOR}{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{writer}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
        os.rename(tmp, final)
        _fsync_directory(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_pretrained(
    folder: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    """`save_pretrained` of the model (safetensors) and its tokenizer into `folder`, in a form
    that transformers 4.57 reads correctly too (`_legacy_fields`)."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    _legacy_fields(folder)


def _legacy_fields(folder: Path) -> None:
    """Add what transformers 4.x looks for to what 5 writes. 5 keeps `rope_theta` inside
    `rope_parameters`, where 4.x does not look (it falls back to 10000: wrong for SmolLM2's
    100000), and names the tokenizer class `TokenizersBackend`, which 4.x lacks. 5 reads the
    top-level `rope_theta` only when `rope_parameters` is absent, and `PreTrainedTokenizerFast`
    as the same class, so both versions load the same model."""
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope and "rope_theta" not in config:
        config["rope_theta"] = rope["rope_theta"]
        if rope.get("rope_type", "default") != "default":
            config["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer_file = folder / "tokenizer_config.json"
    tokenizer = json.loads(tokenizer_file.read_text())
    if tokenizer.get("tokenizer_class") == "TokenizersBackend":
        tokenizer["tokenizer_class"] = "PreTrainedTokenizerFast"
        tokenizer_file.write_text(json.dumps(tokenizer, indent=2) + "\n")


def from_folder(auto_class: type, folder: str | Path, **kwargs):
    """`auto_class.from_pretrained` on a folder on disk (a model store version, or one a
    trainer was given): never a download, so no Hub revision to pin."""
    return auto_class.from_pretrained(folder, local_files_only=True, **kwargs)


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
