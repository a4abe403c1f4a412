"""The Bradley-Terry leaderboard: the fit by hand, and the ranking from real judgements."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.leaderboard import fit
from app.models import Judgement, ModelKind, ModelStatus, ModelVersion, Response, TaskKind
from tests.helpers import api_key_for, create_task


def test_two_versions_fit_the_odds_of_their_record_with_the_prior():
    wins = np.array([[0.0, 3.0], [1.0, 0.0]])  # A beat B three times, B beat A once
    strength = fit(wins)
    # one tied pseudo-game: 3.5 wins against 1.5, and the MLE odds are exactly that ratio
    assert strength[0] - strength[1] == pytest.approx(math.log(3.5 / 1.5), rel=1e-6)
    assert strength.sum() == pytest.approx(0.0, abs=1e-9)


def test_a_version_that_never_won_keeps_a_finite_rating_below_the_others():
    wins = np.array([[0.0, 5.0, 4.0], [1.0, 0.0, 3.0], [0.0, 0.0, 0.0]])
    strength = fit(wins)
    assert np.isfinite(strength).all()
    assert strength[0] > strength[1] > strength[2]


def versions(db, *names: str) -> dict[str, ModelVersion]:
    made = {
        name: ModelVersion(name=name, kind=ModelKind.POLICY, status=ModelStatus.READY, path=name)
        for name in names
    }
    db.add_all(made.values())
    db.flush()
    return made


def judge(db, rater, made, first: str, second: str, *, prefer: str | None) -> None:
    task = create_task(db)
    task.kind = TaskKind.AB_EVAL
    first_id, second_id = (link.response_id for link in task.responses)
    db.get(Response, first_id).model_version_id = made[first].id
    db.get(Response, second_id).model_version_id = made[second].id
    if prefer is None:
        ranking = [[first_id, second_id]]
    else:
        ranking = [first_id, second_id] if prefer == first else [second_id, first_id]
    db.add(Judgement(task_id=task.id, rater_id=rater.id, ranking=ranking))
    db.flush()


def test_the_api_ranks_versions_by_blind_judgements(client, db, admin, rater):
    made = versions(db, "base", "round-1", "round-2")
    for _ in range(8):
        judge(db, rater, made, "round-1", "base", prefer="round-1")
        judge(db, rater, made, "round-2", "round-1", prefer="round-2")
    for _ in range(2):
        judge(db, rater, made, "base", "round-1", prefer="base")
        judge(db, rater, made, "round-2", "base", prefer=None)
    db.commit()
    headers = api_key_for(db, admin)
    board = client.get("/api/models/leaderboard?bootstrap=100", headers=headers).json()
    assert [row["version"] for row in board] == ["round-2", "round-1", "base"]
    for row in board:
        assert row["ci_low"] <= row["rating"] <= row["ci_high"]
    by_name = {row["version"]: row for row in board}
    assert by_name["round-1"]["comparisons"] == 18  # 8 + 8 + 2
    assert by_name["base"]["win_rate"] == pytest.approx((2 + 1) / 12)  # two wins, two ties
    assert client.get("/api/models/leaderboard", headers=api_key_for(db, rater)).status_code == 403


def test_no_comparisons_between_versions_give_an_empty_board(client, db, admin):
    assert client.get("/api/models/leaderboard", headers=api_key_for(db, admin)).json() == []
