"""First-start set-up for the embedded default: the first admin, demo prompts, guidelines."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app import security
from app.bundled import DEMO_PROMPTS
from app.domain import accounts, guidelines, prompt_store
from app.domain.prompt_import import parse_prompts
from app.models import Role

FIRST_ADMIN = "admin"


def create_first_admin(db: Session) -> str | None:
    """On an empty database, create `admin` with a random password and return that password."""
    if accounts.count_users(db) > 0:
        return None
    password = security.generate_password()
    accounts.create_user(db, username=FIRST_ADMIN, password=password, role=Role.ADMIN)
    return password


def load_demo_prompts(db: Session) -> int:
    """Load the shipped demo prompts into a database that has none; returns how many."""
    if prompt_store.count_prompts(db) > 0:
        return 0
    prompts, skipped = parse_prompts(DEMO_PROMPTS.read_bytes(), "jsonl")
    if skipped:
        raise RuntimeError(f"{DEMO_PROMPTS} has invalid rows: {skipped}")
    for prompt in prompts:
        prompt.source = prompt.source or "alignloop demo"
    return prompt_store.add_prompts(db, prompts=prompts, created_by=None).created


def publish_default_guidelines(db: Session) -> bool:
    """Publish the shipped guidelines as version 1 when none exist; True if it did."""
    if guidelines.current_guidelines(db) is not None:
        return False
    guidelines.publish_guidelines(
        db, body=guidelines.SHIPPED_GUIDELINES.read_text("utf-8"), author=None
    )
    return True
