"""The model store: one Hugging Face `save_pretrained` folder (safetensors) per model version.

Folders live under `DATA_DIR/models/<version name>` and are written to a temporary sibling,
fsynced and renamed into place, so a reader never sees half a model. Base models come from
the bundled SmolLM2 GGUF file, a built-in tiny random model, a Hugging Face id or a local path.
"""

from __future__ import annotations

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
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from app.config import BUNDLED_MODEL, TINY_RANDOM_MODEL, Settings
from app.db import session_scope
from app.domain import model_readiness, model_registry
from app.errors import Conflict
from app.models import ModelKind, ModelVersion
from worker.base_models import (
    TOKENIZER_CACHE,
    ModelSourceError,
    bundled_tokenizer,
    load_bundled,
    tiny_random,
)
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
VERSION_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
WRITER_PID = re.compile(rf"{WRITER_SEPARATOR}(\d+)\.[^.]+\.tmp$")
ABANDONED_AFTER_S = 26 * 3600
"""A write of another machine older than this is abandoned: longer than the train queue's
time limit (`app.tasks_contract.TRAIN_TIME_LIMIT_S`, 24 h)."""
# transformers builds models on the "meta" device through process-wide state, so two threads
# loading at once (the embedded worker runs tasks on threads) can corrupt each other's weights.
_LOADING = threading.Lock()
_IMPORTING = threading.Lock()


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
            return load_bundled(self.tokenizer_cache)
        if spec == TINY_RANDOM_MODEL:
            return tiny_random(self.tokenizer_cache)
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
        return bundled_tokenizer(self.tokenizer_cache)
