"""The pair file format: snapshot files of older releases still load, and new ones use the new
names."""

from __future__ import annotations

import json

from app.pairs import HELD_OUT, Pair, pair_line, read_pairs
from worker.training import cli

PAIR = Pair(
    prompt_id=1,
    messages=[{"role": "user", "content": "Hi?"}],
    chosen_id=2,
    chosen="Hello!",
    rejected_id=3,
    rejected="Go away.",
    split=HELD_OUT,
)


def test_an_old_snapshot_line_with_split_eval_reads_as_held_out(tmp_path):
    record = json.loads(pair_line(PAIR)) | {"split": "eval"}  # as releases before held_out wrote
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps(record) + "\n")
    assert read_pairs(path) == [PAIR]
    assert cli.read_pairs(path) == [PAIR]  # the trainers' reader too


def test_a_pair_is_written_with_the_held_out_name():
    assert json.loads(pair_line(PAIR))["split"] == "held_out"
