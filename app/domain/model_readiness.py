"""Whether a model is ready to serve, rate and train; until one is, what preparing it is doing.

A fresh install has no model until a worker has converted the base model into the store, which
takes a minute or more. The worker that prepares it writes its state to a small file in the
store (shared by every process), so that `/readyz`, the dashboard and every route that needs a
model can say "being prepared" or "failed, because ..." instead of accepting work that cannot
run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from app.config import Settings
from app.domain import model_registry
from app.errors import Conflict
from app.models import ModelVersion

PREPARATION_FILE = "base.preparation.json"


@dataclass(frozen=True)
class ModelState:
    """`ready` with the served version's name, else why not, in words."""

    ready: bool
    detail: str


def preparing(models_dir: Path, source: str) -> None:
    """Note that the base model is being converted from `source` (the worker calls this)."""
    _write(models_dir, {"state": "preparing", "source": source, "since": time.time()})


def prepared(models_dir: Path) -> None:
    (models_dir / PREPARATION_FILE).unlink(missing_ok=True)


def preparation_failed(models_dir: Path, source: str, error: str) -> None:
    _write(models_dir, {"state": "failed", "source": source, "error": error, "since": time.time()})


def _write(models_dir: Path, state: dict) -> None:
    path = models_dir / PREPARATION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_suffix(".tmp")
    staged.write_text(json.dumps(state))
    staged.replace(path)


def model_state(db: Session, settings: Settings) -> ModelState:
    current = model_registry.current_policy(db)
    if current is not None:
        return ModelState(True, f"serving {current.name}")
    return ModelState(False, _not_ready_because(settings))


def _not_ready_because(settings: Settings) -> str:
    try:
        state = json.loads((settings.models_dir / PREPARATION_FILE).read_text())
    except (OSError, ValueError):
        return (
            f"No model yet: the base model ({settings.base_model}) has not been prepared; "
            "a worker does it on start (`alignloop models pull-default` does it by hand)"
        )
    minutes = (time.time() - state.get("since", time.time())) / 60
    if state.get("state") == "failed":
        return (
            f"No model yet: preparing the base model ({state['source']}) failed: "
            f"{state.get('error')}. Fix the cause and run `alignloop models pull-default`"
        )
    return (
        f"No model yet: the base model ({state['source']}) is being prepared "
        f"(started {minutes:.0f} min ago; it takes a minute or more)"
    )


def require_ready_model(db: Session, settings: Settings) -> ModelVersion:
    """The current policy; 409 saying why there is none (yet)."""
    current = model_registry.current_policy(db)
    if current is None:
        raise Conflict(_not_ready_because(settings))
    return current
