"""The Bradley-Terry leaderboard: the fit by hand, and the ranking from real judgements."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.domain.leaderboard import fit, head_to_head, wilson_interval
from tests.helpers import ab_judgement, api_key_for, policy_versions


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


def test_the_api_ranks_versions_by_blind_judgements(client, db, admin, rater):
    made = policy_versions(db, "base", "round-1", "round-2")
    for _ in range(8):
        ab_judgement(db, rater, made, "round-1", "base", prefer="round-1")
        ab_judgement(db, rater, made, "round-2", "round-1", prefer="round-2")
    for _ in range(2):
        ab_judgement(db, rater, made, "base", "round-1", prefer="base")
        ab_judgement(db, rater, made, "round-2", "base", prefer=None)
    db.commit()
    headers = api_key_for(db, admin)
    board = client.get("/api/models/leaderboard?bootstrap=100", headers=headers).json()
    no_resamples = client.get("/api/models/leaderboard?bootstrap=0", headers=headers)
    assert no_resamples.status_code == 422  # an interval needs at least one resample
    assert [row["version"] for row in board] == ["round-2", "round-1", "base"]
    for row in board:
        assert row["ci_low"] <= row["rating"] <= row["ci_high"]
    by_name = {row["version"]: row for row in board}
    assert by_name["round-1"]["comparisons"] == 18  # 8 + 8 + 2
    assert by_name["base"]["win_rate"] == pytest.approx((2 + 1) / 12)  # two wins, two ties
    assert client.get("/api/models/leaderboard", headers=api_key_for(db, rater)).status_code == 403


def test_no_comparisons_between_versions_give_an_empty_board(client, db, admin):
    assert client.get("/api/models/leaderboard", headers=api_key_for(db, admin)).json() == []


def test_the_wilson_interval_matches_its_formula_and_stays_inside_0_and_1():
    low, high = wilson_interval(8, 10)
    # p = 0.8, z = 1.96: centre (0.8 + 0.19208) / 1.38416, half-width computed by hand
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_head_to_head_counts_two_versions_only_with_ties_as_halves(db, rater):
    made = policy_versions(db, "base", "round-1", "other")
    for prefer in ("round-1", "round-1", "round-1", "base", None):
        ab_judgement(db, rater, made, "round-1", "base", prefer=prefer)
    ab_judgement(db, rater, made, "other", "round-1", prefer="other")  # not between the two
    verdict = head_to_head(db, "round-1", "base")
    assert verdict.n == 5 and verdict.win_rate == pytest.approx(3.5 / 5)
    assert (verdict.low, verdict.high) == pytest.approx(wilson_interval(3.5, 5))
    assert head_to_head(db, "round-1", "nobody").n == 0
