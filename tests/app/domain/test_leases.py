"""One lease, one semantics, for jobs and round stages alike (`app.domain.leases`)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.domain import leases
from app.models import Job, Round, RunStatus, utcnow

LINES = itertools.count()
"""Each round on a line of its own: a line has at most one active round."""


def new_row(db, kind: type[Job] | type[Round]) -> Job | Round:
    if kind is Job:
        row = Job(kind="generate_candidates", params={})
    else:
        row = Round(config={}, line=f"line-{next(LINES)}")
    db.add(row)
    db.flush()
    return row


def lost_ids(db, kind, **how) -> set[int]:
    return set(db.scalars(select(kind.id).where(leases.is_lost(kind, **how))))


@pytest.fixture(params=[Job, Round], ids=["job", "round"])
def kind(request):
    return request.param


def test_one_worker_holds_a_row_until_its_lease_runs_out(db, kind):
    row = new_row(db, kind)
    assert leases.claim(db, kind, row.id, worker="host:1:1") is row
    assert (row.status, row.lease_owner, row.attempts) == (RunStatus.RUNNING, "host:1:1", 1)
    assert leases.claim(db, kind, row.id, worker="host:2:1") is None
    assert not leases.renew(db, kind, row.id, worker="host:2:1", progress=0.5)
    assert leases.renew(db, kind, row.id, worker="host:1:1", progress=0.5, detail="step 1 of 2")
    db.refresh(row)
    assert (row.progress, row.progress_detail) == (0.5, "step 1 of 2")
    row.lease_expires_at = utcnow() - timedelta(seconds=1)  # host 1 died
    db.flush()
    assert lost_ids(db, kind) == {row.id}
    taken = leases.claim(db, kind, row.id, worker="host:2:1")
    assert (taken.lease_owner, taken.attempts, taken.progress) == ("host:2:1", 2, 0.0)
    assert not leases.renew(db, kind, row.id, worker="host:1:1", progress=0.9)  # too late


def test_a_claim_meets_the_owners_conditions_and_sets_its_values(db, kind):
    row = new_row(db, kind)
    assert leases.claim(db, kind, row.id, worker="w", where=[kind.attempts > 5]) is None
    assert row.status == RunStatus.QUEUED
    claimed = leases.claim(db, kind, row.id, worker="w", values={"error": "noted"})
    assert claimed.error == "noted"


def test_finished_rows_are_never_claimed(db, kind):
    row = new_row(db, kind)
    row.status = RunStatus.SUCCEEDED
    db.flush()
    assert leases.claim(db, kind, row.id, worker="w") is None


def test_a_lost_row_is_one_whose_owner_is_gone(db, kind):
    alive, free = new_row(db, kind), new_row(db, kind)
    leases.claim(db, kind, alive.id, worker="host:1:1")
    free.status = RunStatus.RUNNING  # between two stages of a round: no owner
    db.flush()
    assert lost_ids(db, kind) == set()
    assert lost_ids(db, kind, after_restart=True) == {alive.id}
    assert leases.held_elsewhere(alive, "host:2")
    assert not leases.held_elsewhere(alive, "host:1")
    assert not leases.held_elsewhere(free, "host:2")
