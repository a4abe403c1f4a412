"""Many raters at once: no slot leased twice, no task over-judged, no rater judging twice."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from app.db import make_session_factory, session_scope
from app.domain import accounts
from app.domain.assignment import assign_next_task
from app.domain.judgements import submit_judgement
from app.models import Assignment, AssignmentStatus, Judgement, Role, Task, User
from app.schemas import JudgementIn
from tests.helpers import create_task

RATERS = 32
TASKS = 200
OVERLAP = 2


def rate_until_done(factory, rater_id: int, start: threading.Barrier) -> int:
    """One rater's loop: next, submit, until no task is left; returns judgements made."""
    start.wait()
    made = 0
    while True:
        with factory() as db:
            rater = db.get(User, rater_id)
            assignment = assign_next_task(db, rater=rater, lease_minutes=30, max_open_leases=1)
            db.commit()
            if assignment is None:
                return made
            body = JudgementIn(ranking=assignment.response_order)
            submit_judgement(
                db, rater=rater, task_id=assignment.task_id, body=body, aspects=["helpfulness"]
            )
            db.commit()
            made += 1


def test_concurrent_raters_keep_every_invariant(committed_engine):
    factory = make_session_factory(committed_engine)
    with session_scope(factory) as db:
        for _ in range(TASKS):
            create_task(db, overlap=OVERLAP)
        raters = [
            accounts.create_user(
                db, username=f"rater{n:02}", password="long enough pw", role=Role.RATER
            ).id
            for n in range(RATERS)
        ]
    start = threading.Barrier(RATERS)
    with ThreadPoolExecutor(max_workers=RATERS) as pool:
        made = list(pool.map(lambda rater_id: rate_until_done(factory, rater_id, start), raters))

    assert sum(made) == TASKS * OVERLAP
    with factory() as db:
        per_task = db.execute(
            select(Judgement.task_id, func.count()).group_by(Judgement.task_id)
        ).all()
        assert len(per_task) == TASKS and {count for _, count in per_task} == {OVERLAP}
        pairs = db.execute(select(Judgement.task_id, Judgement.rater_id)).all()
        assert len(pairs) == len(set(pairs))  # nobody judged a task twice
        leases = db.execute(
            select(Assignment.task_id, Assignment.rater_id, Assignment.status)
        ).all()
        assert len(leases) == TASKS * OVERLAP  # one lease per slot, none granted twice
        assert {status for *_, status in leases} == {AssignmentStatus.SUBMITTED}
        assert db.scalar(select(func.count()).where(Task.status != "complete")) == 0


def test_the_same_submit_sent_many_times_at_once_is_stored_once(committed_engine):
    """A client that retries before its first attempt has answered (checklist DATA-03)."""
    factory = make_session_factory(committed_engine)
    with session_scope(factory) as db:
        task_id = create_task(db, overlap=1).id
        rater = accounts.create_user(db, username="r", password="long enough pw", role=Role.RATER)
        assignment = assign_next_task(db, rater=rater, lease_minutes=30, max_open_leases=1)
        rater_id, order = rater.id, assignment.response_order
    copies = 8
    start = threading.Barrier(copies)

    def submit(_: int) -> tuple[int, bool]:
        start.wait()
        with factory() as db:
            judgement, new = submit_judgement(
                db,
                rater=db.get(User, rater_id),
                task_id=task_id,
                body=JudgementIn(ranking=order),
                aspects=["helpfulness"],
                idempotency_key="one-click",
            )
            db.commit()
            return judgement.id, new

    with ThreadPoolExecutor(max_workers=copies) as pool:
        answers = list(pool.map(submit, range(copies)))

    assert len({judgement_id for judgement_id, _ in answers}) == 1
    assert sorted(new for _, new in answers) == [False] * (copies - 1) + [True]
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(Judgement)) == 1
        assert db.get(Task, task_id).status == "complete"
