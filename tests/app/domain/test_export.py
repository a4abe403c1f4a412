"""Exports: TRL, KTO, HH and raw formats, checked with `datasets` and TRL's own helpers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from datasets import load_dataset
from trl.data_utils import is_conversational, maybe_apply_chat_template

from app.cli import main
from app.db import make_session_factory, session_scope
from app.domain import accounts, export
from app.domain.export import FORMATS
from app.models import Judgement, Role
from tests.helpers import TEST_SECRET, api_key_for, create_task, snapshot_round


@pytest.fixture
def judged(db, rater, make_user):
    """Two tasks judged by two raters: a 3-way ranking with a tie, and a pairwise choice."""
    three = create_task(db, responses=3, texts=["good <b>", "fine", "poor"])
    a, b, c = (link.response_id for link in three.responses)
    two = create_task(db, texts=["yes", "no"])
    x, y = (link.response_id for link in two.responses)
    other = make_user(role="rater", username="otto")
    for judgement in (
        Judgement(task_id=three.id, rater_id=rater.id, ranking=[a, [b, c]]),
        Judgement(task_id=three.id, rater_id=other.id, ranking=[a, b, c]),
        Judgement(task_id=two.id, rater_id=rater.id, ranking=[y, x], strength=2),
    ):
        db.add(judgement)
    db.commit()
    return db


def download(client, db, admin, **query) -> bytes:
    response = client.get("/api/export/preferences", params=query, headers=api_key_for(db, admin))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return response.content


def rows(content: bytes) -> list[dict]:
    return [json.loads(line) for line in content.splitlines()]


def test_the_trl_export_is_a_conversational_preference_dataset(
    client, judged, admin, tmp_path, bundled_tokenizer_dir
):
    from transformers import AutoTokenizer

    path = tmp_path / "trl.jsonl"
    path.write_bytes(download(client, judged, admin, format="trl"))
    dataset = load_dataset("json", data_files=str(path), split="train")
    assert set(dataset.column_names) == {"prompt", "chosen", "rejected"}
    assert len(dataset) == 6  # a>b, a>c (the tie is left out); a>b, a>c, b>c; y>x
    tokenizer = AutoTokenizer.from_pretrained(bundled_tokenizer_dir)
    for example in dataset:
        assert is_conversational(example)
        text = maybe_apply_chat_template(example, tokenizer)
        assert set(text) == {"prompt", "chosen", "rejected"}
        assert text["chosen"].strip() and text["rejected"].strip()


def test_kto_labels_each_completion_once_by_its_net_preference(client, judged, admin, tmp_path):
    path = tmp_path / "kto.jsonl"
    path.write_bytes(download(client, judged, admin, format="kto"))
    dataset = load_dataset("json", data_files=str(path), split="train")
    assert set(dataset.column_names) == {"prompt", "completion", "label"}
    labels = {row["completion"][0]["content"]: row["label"] for row in dataset}
    # "fine" won one comparison (b>c) and lost two (a>b twice): one row, undesirable
    assert labels == {"good <b>": True, "fine": False, "poor": False, "yes": False, "no": True}
    assert len(dataset) == len(labels)  # no completion twice, so no label twice


def test_kto_leaves_out_a_completion_whose_wins_and_losses_balance(
    client, db, rater, make_user, admin
):
    task = create_task(db, texts=["left", "right"])
    left, right = (link.response_id for link in task.responses)
    other = make_user(role="rater", username="otto")
    db.add(Judgement(task_id=task.id, rater_id=rater.id, ranking=[left, right]))
    db.add(Judgement(task_id=task.id, rater_id=other.id, ranking=[right, left]))
    db.commit()
    assert download(client, db, admin, format="kto") == b""


def test_standard_and_hh_formats_are_plain_text(client, judged, admin):
    standard = rows(download(client, judged, admin, format="trl-standard"))
    assert all(
        isinstance(row["prompt"], str) and isinstance(row["chosen"], str) for row in standard
    )
    hh = rows(download(client, judged, admin, format="hh"))
    assert all(row["chosen"].startswith("\n\nHuman: ") for row in hh)
    assert all("\n\nAssistant: " in row["rejected"] for row in hh)


def test_raw_rows_keep_every_judgement_with_its_details(client, judged, admin):
    raw = rows(download(client, judged, admin, format="raw"))
    assert len(raw) == 3
    assert raw[2]["strength"] == 2 and raw[2]["ranking"][0] == raw[2]["responses"][1]["id"]
    assert "password" not in json.dumps(raw)


def test_exporting_the_same_data_twice_gives_identical_bytes(client, judged, admin):
    for file_format in FORMATS:
        first = download(client, judged, admin, format=file_format)
        assert first and first == download(client, judged, admin, format=file_format)


def test_a_rounds_export_is_its_snapshot(client, judged, admin, settings):
    round_ = snapshot_round(judged, settings.snapshots_dir)
    before = download(client, judged, admin, format="trl", round=round_.id)
    task = create_task(judged)  # newer data does not change the round's export
    judged.add(
        Judgement(
            task_id=task.id,
            rater_id=admin.id,
            ranking=[link.response_id for link in task.responses],
        )
    )
    judged.commit()
    assert download(client, judged, admin, format="trl", round=round_.id) == before
    assert download(client, judged, admin, format="trl") != before
    assert len(rows(download(client, judged, admin, format="raw", round=round_.id))) == 3
    pairs = download(client, judged, admin, format="pairs", round=round_.id)
    assert pairs == (settings.snapshots_dir / f"{round_.snapshot_sha256}.jsonl").read_bytes()


def test_a_rounds_pairs_export_is_its_snapshot_file_even_one_an_older_version_wrote(
    client, judged, admin, settings
):
    round_ = snapshot_round(judged, settings.snapshots_dir)
    snapshot = settings.snapshots_dir / f"{round_.snapshot_sha256}.jsonl"
    # A held-out pair as written before the pair split was named held_out.
    older = snapshot.read_bytes().replace(b'"split":"train"', b'"split":"eval"', 1)
    assert older != snapshot.read_bytes()
    snapshot.write_bytes(older)
    assert download(client, judged, admin, format="pairs", round=round_.id) == older


def judge_new_tasks(factory, rater_id: int, count: int) -> None:
    """`count` new two-answer tasks, each judged with a clear winner, committed."""
    with session_scope(factory) as db:
        for _ in range(count):
            task = create_task(db)
            ranking = [link.response_id for link in task.responses]
            db.add(Judgement(task_id=task.id, rater_id=rater_id, ranking=ranking))


@pytest.mark.parametrize("file_format", FORMATS)
def test_an_export_holds_what_was_committed_when_it_started(
    committed_engine, tmp_path, monkeypatch, file_format
):
    """Judgements submitted while an export streams stay out of it, and the export holds no
    lock that keeps the raters who submit them waiting (on SQLite, a transaction would)."""
    monkeypatch.setattr(export, "RAW_BATCH_SIZE", 1)  # the raw export reads row by row
    factory = make_session_factory(committed_engine)
    with session_scope(factory) as db:
        rater = accounts.create_user(
            db, username="rita", password="long enough pw", role=Role.RATER
        )
    judge_new_tasks(factory, rater.id, 3)

    def export_now(db) -> Iterator[bytes]:
        return export.export_lines(
            db, file_format=file_format, round_id=None, snapshots_dir=tmp_path
        )

    with factory() as db:
        before = list(export_now(db))
    with factory() as db:
        lines = export_now(db)
        streamed = [next(lines)]
        judge_new_tasks(factory, rater.id, 2)  # raters submit while the export streams
        streamed += lines
    assert streamed == before
    with factory() as db:
        assert len(list(export_now(db))) > len(before)  # the next export has them


def test_bad_export_requests_are_refused(client, judged, admin, rater):
    headers = api_key_for(judged, admin)
    assert client.get("/api/export/preferences?format=csv", headers=headers).status_code == 422
    assert client.get("/api/export/preferences?round=99", headers=headers).status_code == 404
    rater_headers = api_key_for(judged, rater)
    assert client.get("/api/export/preferences", headers=rater_headers).status_code == 403


def test_the_cli_exports_to_a_file(settings, tmp_path, committed_engine):
    with session_scope(make_session_factory(committed_engine)) as db:
        rater = accounts.create_user(
            db, username="rita", password="long enough pw", role=Role.RATER
        )
        task = create_task(db)
        ids = [link.response_id for link in task.responses]
        db.add(Judgement(task_id=task.id, rater_id=rater.id, ranking=ids))
    out = tmp_path / "export.jsonl"
    env = {
        "ALIGNLOOP_DATA_DIR": str(settings.data_dir),
        "ALIGNLOOP_DATABASE_URL": committed_engine.url.render_as_string(hide_password=False),
        "ALIGNLOOP_SECRET_KEY": TEST_SECRET,
    }
    result = CliRunner().invoke(main, ["export", "--format", "hh", "-o", str(out)], env=env)
    assert result.exit_code == 0, result.output
    [row] = rows(out.read_bytes())
    assert row["chosen"].startswith("\n\nHuman: prompt ") and "Assistant: answer 0" in row["chosen"]
    missing = CliRunner().invoke(main, ["export", "--round", "99"], env=env)
    assert missing.exit_code == 1 and "No round with a snapshot" in missing.output
