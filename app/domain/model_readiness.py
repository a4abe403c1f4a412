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


MODEL_STATE_WORDING = {
    "serving": "serving {name}",
    "not_prepared": "No model yet: the base model ({source}) has not been prepared; a worker does "
    "it on start (`alignloop models pull-default` does it by hand)",
    "preparing": "No model yet: the base model ({source}) is being prepared (started {minutes} min "
    "ago; it takes a minute or more)",
    "failed": "No model yet: preparing the base model ({source}) failed: {error}. Fix the cause "
    "and run `alignloop models pull-default`",
}
"""Each state in English, as `/readyz` and refusals say it; pages word it in the reader's
language from the catalogue (`admin.model_state.<kind>`), whose English is this."""


@dataclass(frozen=True)
class ModelState:
    """Whether a model serves: `kind` names the state (a key of `MODEL_STATE_WORDING`) and
    `facts` fill its wording, so every reader can word it in their own language."""

    kind: str
    facts: dict[str, str]

    @property
    def ready(self) -> bool:
        return self.kind == "serving"

    @property
    def detail(self) -> str:
        """The state in English."""
        return MODEL_STATE_WORDING[self.kind].format(**self.facts)


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
        return ModelState("serving", {"name": current.name})
    return _not_ready_because(settings)


def _not_ready_because(settings: Settings) -> ModelState:
    try:
        state = json.loads((settings.models_dir / PREPARATION_FILE).read_text())
    except (OSError, ValueError):
        return ModelState("not_prepared", {"source": settings.base_model})
    if state.get("state") == "failed":
        return ModelState("failed", {"source": state["source"], "error": str(state.get("error"))})
    minutes = (time.time() - state.get("since", time.time())) / 60
    return ModelState("preparing", {"source": state["source"], "minutes": f"{minutes:.0f}"})


def require_ready_model(db: Session, settings: Settings) -> ModelVersion:
    """The current policy; 409 saying why there is none (yet)."""
    current = model_registry.current_policy(db)
    if current is None:
        raise Conflict(_not_ready_because(settings).detail)
    return current
