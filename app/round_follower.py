"""Following a round from the command line (`alignloop rounds start --wait`): a progress bar
per stage, with what the stage is doing and the time it still needs, until the round ends."""

from __future__ import annotations

import time

from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from app.domain.rounds import ACTIVE
from app.models import Round, RunStatus
from app.web.templating import time_left

POLL_S = 2.0
BAR_STEPS = 1000


def follow_round(session_factory: sessionmaker[Session], round_id: int) -> Round:
    """Show the round's stages as they run (on stderr, when it is a terminal); returns the
    round once it has ended."""
    bar: tqdm | None = None
    stage = None
    try:
        while True:
            with session_factory() as db:
                round_ = db.get(Round, round_id)
            if round_.stage != stage and round_.status == RunStatus.RUNNING:
                if bar is not None:
                    bar.close()
                stage = round_.stage
                bar = tqdm(total=BAR_STEPS, desc=f"round {round_id} · {stage.value}", disable=None)
            if bar is not None:
                bar.n = round(round_.progress * BAR_STEPS)
                bar.set_postfix_str(_postfix(round_), refresh=True)
            if round_.status not in ACTIVE:
                return round_
            time.sleep(POLL_S)
    finally:
        if bar is not None:
            bar.close()


def _postfix(round_: Round) -> str:
    parts = (round_.progress_detail, time_left(round_.eta_seconds))
    return " · ".join(part for part in parts if part)
