"""Snapshots: rankings into pairs, ties and rewrites, the split, and byte-stable output."""

from __future__ import annotations

import pytest

from app.domain.preferences import (
    EVAL_FRACTION,
    build_snapshot,
    expand_ranking,
    split_of,
    write_snapshot,
)
from app.models import Judgement, Response, Role, Task
from app.pairs import read_pairs
from tests.helpers import create_task, prompt_keys


def test_a_three_way_ranking_gives_three_pairs():
    assert expand_ranking([3, 1, 2]) == [(3, 1, 1.0), (3, 2, 1.0), (1, 2, 1.0)]


def test_ties_are_skipped_or_kept_as_half_targets():
    assert expand_ranking([3, [2, 1]]) == [(3, 1, 1.0), (3, 2, 1.0)]
    assert expand_ranking([3, [2, 1]], ties="half") == [(3, 1, 1.0), (3, 2, 1.0), (1, 2, 0.5)]
    assert expand_ranking([[1, 2]]) == []


def test_a_four_way_ranking_gives_six_pairs():
    assert len(expand_ranking([4, 3, 2, 1])) == 6


def test_the_split_is_deterministic_and_about_the_configured_share():
    keys = [f"prompt-{index}" for index in range(4000)]
    first = [split_of(key) for key in keys]
    assert first == [split_of(key) for key in keys]
    share = first.count("held_out") / len(first)
    assert share == pytest.approx(EVAL_FRACTION, abs=0.02)


def judge(db, task, rater, ranking, **fields) -> Judgement:
    judgement = Judgement(task_id=task.id, rater_id=rater.id, ranking=ranking, **fields)
    db.add(judgement)
    db.flush()
    return judgement


@pytest.fixture
def ranked(db, rater, make_user):
    """A 3-way task ranked by two raters (one with a tie), and a pairwise one with a rewrite."""
    task = create_task(db, responses=3, texts=["alpha", "beta", "gamma"])
    a, b, c = (link.response_id for link in task.responses)
    other = make_user(Role.RATER, "otto")
    judge(db, task, rater, [a, b, c])
    judge(db, task, other, [a, [b, c]])
    pairwise = create_task(db, texts=["first", "second"])
    x, y = (link.response_id for link in pairwise.responses)
    rewrite = Response(
        prompt_id=pairwise.prompt_id,
        author_id=rater.id,
        text="better first",
        generation_params={"kind": "rewrite", "replaces_response_id": x},
    )
    db.add(rewrite)
    db.flush()
    judge(db, pairwise, rater, [x, y], strength=3, rewrite_response_id=rewrite.id)
    return {"a": a, "b": b, "c": c, "x": x, "y": y, "rewrite": rewrite.id, "rater": rater}


def test_a_snapshot_expands_rankings_rewrites_and_margins(db, ranked):
    snapshot = build_snapshot(db)
    triples = {(pair.chosen_id, pair.rejected_id, pair.source) for pair in snapshot.pairs}
    a, b, c, x, y = (ranked[key] for key in "abcxy")
    assert triples == {
        (a, b, "ranking"),
        (a, c, "ranking"),
        (b, c, "ranking"),  # rater 1
        (a, b, "ranking"),
        (a, c, "ranking"),  # rater 2, tie left out
        (x, y, "ranking"),
        (ranked["rewrite"], x, "rewrite"),
    }
    assert len(snapshot.pairs) == 7
    strong = next(pair for pair in snapshot.pairs if (pair.chosen_id, pair.rejected_id) == (x, y))
    assert strong.margin == 2.0  # strength 3: "much better"
    assert snapshot.judgement_count == 3 and snapshot.rater_count == 2


def test_agreement_says_how_many_raters_ordered_a_pair_the_same_way(db, ranked):
    pairs = build_snapshot(db).pairs
    a, b, c = ranked["a"], ranked["b"], ranked["c"]
    agreement = {(p.chosen_id, p.rejected_id, p.rater_id): p.agreement for p in pairs}
    rater = ranked["rater"].id
    assert agreement[(a, b, rater)] == 1.0  # both put a above b
    assert agreement[(b, c, rater)] == 1.0  # the other rater tied them: no opposite vote


def test_ties_as_half_targets_add_pairs(db, ranked):
    half = [pair for pair in build_snapshot(db, ties="half").pairs if pair.target == 0.5]
    assert [(pair.chosen_id, pair.rejected_id) for pair in half] == [
        tuple(sorted((ranked["b"], ranked["c"])))
    ]


def test_a_correction_replaces_the_judgement_it_corrects(db, ranked):
    first = db.query(Judgement).order_by(Judgement.id).first()
    correction = judge(
        db,
        db.get(Task, first.task_id),
        ranked["rater"],
        [ranked["c"], ranked["b"], ranked["a"]],
        supersedes_id=first.id,
    )
    pairs = build_snapshot(db).pairs
    assert all(pair.judgement_id != first.id for pair in pairs)
    assert {(p.chosen_id, p.rejected_id) for p in pairs if p.judgement_id == correction.id} == {
        (ranked["c"], ranked["b"]),
        (ranked["c"], ranked["a"]),
        (ranked["b"], ranked["a"]),
    }


def test_the_same_data_gives_the_same_bytes_and_a_cutoff_freezes_it(db, ranked, tmp_path):
    first = build_snapshot(db)
    second = build_snapshot(db)
    assert first.lines == second.lines and first.sha256 == second.sha256
    task = create_task(db)
    judge(db, task, ranked["rater"], [link.response_id for link in task.responses])
    frozen = build_snapshot(db, up_to_judgement_id=first.up_to_judgement_id)
    assert frozen.sha256 == first.sha256
    assert build_snapshot(db).sha256 != first.sha256
    path = write_snapshot(first, tmp_path)
    assert path.name == f"{first.sha256}.jsonl"
    assert read_pairs(path) == first.pairs


def test_rater_trust_becomes_the_pair_weight(db, ranked):
    rater = ranked["rater"].id
    pairs = build_snapshot(db, rater_weights={rater: 0.25}).pairs
    assert {pair.weight for pair in pairs if pair.rater_id == rater} == {0.25}
    assert {pair.weight for pair in pairs if pair.rater_id != rater} == {1.0}


def test_demonstrations_are_the_answers_people_wrote(db, ranked):
    from app.domain.preferences import collect_demonstrations

    assert [item["answer"] for item in collect_demonstrations(db)] == ["better first"]


def test_training_pairs_can_start_after_a_cutoff_while_held_out_pairs_keep_all(db, rater):
    def judged(key: str) -> Judgement:
        task = create_task(db, dedup_hash=key)
        return judge(db, task, rater, [link.response_id for link in task.responses])

    old_eval, new_eval, old_train, new_train = prompt_keys(4, held_out=2)
    old = [judged(old_train), judged(old_eval)]
    new = [judged(new_train), judged(new_eval)]
    snapshot = build_snapshot(db, train_after_judgement_id=old[-1].id)
    used = {(pair.judgement_id, pair.split) for pair in snapshot.pairs}
    assert used == {(new[0].id, "train"), (old[1].id, "held_out"), (new[1].id, "held_out")}
    assert snapshot.judgement_count == 3
    assert len(build_snapshot(db).pairs) == 4  # no cutoff: every judgement
