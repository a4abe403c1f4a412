"""The Chinese admin console's tests' common ground: a database with something on every page
of the console (dashboard, rounds, a round, models, quality), and the English text of the
console's catalogue keys that must not be left on a page that should be all Chinese."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy.orm import Session

from app.config import Settings
from app.domain import leaderboard, quality, rounds
from app.models import Algorithm, Job, Round, RoundStage, RunStatus, User, utcnow
from app.web.i18n import MESSAGES, PLURALS
from tests.helpers import ab_judgement, policy_versions

# Phrases only: single English words (a heading like "Gold", a stage like "policy") are also
# names in the data the pages show (metric names, presets, usernames), so they are asserted on
# one by one instead.
_HOLE = re.compile(r"\{\w+\}")


def _phrases(text: str) -> list[str]:
    return [part.strip(" ,;:.()") for part in _HOLE.split(text) if " " in part.strip(" ,;:.()")]


ENGLISH_PHRASES = sorted(
    {
        phrase
        for key, text in MESSAGES["en"].items()
        if key.startswith("admin.") and text != MESSAGES["zh"][key]
        for phrase in _phrases(text)
    }
    | {
        phrase
        for key, forms in PLURALS["en"].items()
        if key.startswith("admin.")
        for text in forms.values()
        for phrase in _phrases(text)
    }
)
"""English phrases (the text between `{}` holes, with a space in it) of every `admin.` key."""


def english_left(page_text: str) -> list[str]:
    """The console's English phrases that appear in `page_text`."""
    return [phrase for phrase in ENGLISH_PHRASES if phrase in page_text]


def seed_console(db: Session, settings: Settings, admin: User, rater: User) -> dict[str, int]:
    """A Chinese-speaking `admin`, and for every console page something to show: a finished
    round with its results, a running one with curves and a log, jobs, two versions compared
    blind by `rater` (the leaderboard) and the quality figures, uncommitted; returns the rounds'
    ids."""
    admin.locale = "zh"
    made = policy_versions(db, "base", "round-1")
    made["round-1"].parent_id = made["base"].id
    for prefer in ("round-1", "round-1", "base", "round-1"):
        ab_judgement(db, rater, made, "round-1", "base", prefer=prefer)
    finished = _round(db, status=RunStatus.SUCCEEDED, stage=RoundStage.DONE, metrics=RESULTS)
    finished.parent_version_id = made["base"].id
    made["round-1"].round_id = finished.id
    stage_began = utcnow() - timedelta(seconds=400)  # 40% in 400 s: about 10 min left
    running = _round(
        db,
        status=RunStatus.RUNNING,
        stage=RoundStage.POLICY,
        progress=0.4,
        started_at=stage_began,
        stage_started_at=stage_began,
        lease_owner="a worker elsewhere",  # alive: the dashboard reports no lost work
        lease_expires_at=utcnow() + timedelta(hours=1),
    )
    for step in (1, 2, 3):
        values = {"beta": 0.05, "reward": 0.1 * step}
        rounds.record_points(
            db, round_id=running.id, stage=RoundStage.POLICY, step=step, values=values
        )
    rounds.add_log(db, round_id=running.id, stage=RoundStage.POLICY, message="step 3 of 12")
    started = utcnow() - timedelta(minutes=5)
    db.add(
        Job(
            kind="generate_candidates",
            status=RunStatus.SUCCEEDED,
            progress=1.0,
            result={"tasks": 4},
            started_at=started,
            finished_at=started + timedelta(seconds=75),
        )
    )
    db.add(Job(kind="train_reward_model", status=RunStatus.QUEUED, progress=0.0))
    leaderboard.store(db, bootstrap=20)
    quality.refresh_quality(db, settings)
    return {"finished": finished.id, "running": running.id}


RESULTS = {
    "reward_model": {"eval_accuracy": 0.71, "eval_pairs": 120},
    "evaluation": {
        "win_rate": 0.62,
        "win_rate_low": 0.51,
        "win_rate_high": 0.72,
        "n": 80,
        "reward": 0.4,
        "parent_reward": 0.1,
        "kl_to_parent": 0.8,
        "response_length": 120,
        "parent_response_length": 100,
    },
    "register": {"version": "round-1"},
}


def _round(db: Session, **fields) -> Round:
    round_ = Round(algorithm=Algorithm.DPO, preset="quick", config={}, **fields)
    db.add(round_)
    db.flush()
    return round_
