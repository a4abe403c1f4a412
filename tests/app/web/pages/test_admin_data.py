"""The admin Data pages: importing prompt files, browsing prompts, tasks and judgements,
exporting from the browser, and the raw export's bounded number of queries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from app.domain import accounts, export, prompt_store
from app.domain.prompt_import import parse_prompts
from app.models import (
    Assignment,
    GuidelineVersion,
    Judgement,
    ModelKind,
    ModelStatus,
    ModelVersion,
    Prompt,
    Response,
    Role,
    TaskKind,
    TaskStatus,
)
from app.web.main import create_app
from tests.helpers import api_key_for, browser_login, create_task, html, problem, snapshot_round


def jsonl(*records: object) -> bytes:
    return "\n".join(json.dumps(record, ensure_ascii=False) for record in records).encode()


@pytest.fixture
def csrf(client, admin) -> str:
    return browser_login(client, admin.username)


def upload(client, csrf: str, filename: str, content: bytes, **fields: str):
    return client.post(
        "/admin/data/import",
        data={"csrf_token": csrf, **fields},
        files={"file": (filename, content, "application/octet-stream")},
        headers={"Accept": "text/html", "Referer": "http://testserver/admin/data"},
    )


def report_of(response) -> dict:
    page = html(response)
    counts = {
        name: int(page.select_one(f".import-report dd.{name}").text)
        for name in ("created", "duplicates", "skipped")
    }
    rows = [
        tuple(cell.text for cell in row.select("td"))
        for row in page.select(".skipped-rows tbody tr")
    ]
    return {**counts, "rows": rows}


def stored_prompts(db) -> list[Prompt]:
    db.expire_all()
    return list(db.scalars(select(Prompt).order_by(Prompt.id)))


# --- import --------------------------------------------------------------------------------------


def test_a_jsonl_import_reports_duplicates_and_skipped_lines_and_applies_tags(client, db, csrf):
    content = jsonl(
        {"prompt": "What is RLHF?", "tags": ["question"]},
        {"prompt": "Name a prime."},
        {"prompt": "What is  RLHF?"},  # the first one again, whitespace aside
    )
    content += b"\n{broken\n" + jsonl({"prompt": "Hi", "owner_id": 3})
    response = upload(client, csrf, "prompts.jsonl", content, tags="batch-1, maths", split="eval")
    assert response.status_code == 200
    report = report_of(response)
    assert (report["created"], report["duplicates"], report["skipped"]) == (2, 1, 2)
    assert report["rows"][0][0] == "4" and "invalid JSON" in report["rows"][0][1]
    assert report["rows"][1][0] == "5" and "owner_id" in report["rows"][1][1]
    first, second = stored_prompts(db)
    assert first.tags == ["question", "batch-1", "maths"] and second.tags == ["batch-1", "maths"]
    assert {first.split.value, second.split.value} == {"eval"}
    assert first.created_by_id is not None

    again = upload(client, csrf, "prompts.jsonl", content)
    assert (report_of(again)["created"], report_of(again)["duplicates"]) == (0, 3)
    assert "2 already stored, 1 repeated" in html(again).select_one(".duplicates-detail").text


def test_csv_and_json_files_import_with_their_row_numbers(client, db, csrf):
    csv_file = b'prompt,tags,source\nTranslate "cat",fr;easy,book\n,empty,book\nSay hi,,book\n'
    report = report_of(upload(client, csrf, "prompts.csv", csv_file, source="override"))
    assert (report["created"], report["skipped"]) == (2, 1)
    assert report["rows"][0][0] == "3"
    assert {prompt.source for prompt in stored_prompts(db)} == {"override"}

    json_file = json.dumps({"prompts": [{"prompt": "Pick a colour"}, 7]}).encode()
    response = upload(client, csrf, "upload.txt", json_file, format="json")
    assert "Item" in html(response).select_one(".skipped-rows th").text
    assert report_of(response)["rows"] == [("2", "each prompt must be an object")]
    assert len(stored_prompts(db)) == 3


@pytest.mark.parametrize(
    ("filename", "content", "fields", "message"),
    [
        ("p.jsonl", b"\xff\xfe\x00\x81 not text", {}, "not UTF-8"),
        ("p.jsonl", b"  \n\n", {}, "empty"),
        ("p.json", b"<html>not json</html>", {}, "Invalid JSON"),
        ("p.csv", b"question,answer\nx,y\n", {}, '"prompt"'),
        ("p.xlsx", b"PK\x03\x04", {}, "Unknown prompt file type"),
        ("p.jsonl", jsonl({"prompt": "ok"}), {"tags": "ok, " + "x" * 65}, "tags.1: String"),
        ("p.jsonl", jsonl({"prompt": "ok"}), {"split": "holdout"}, "split: Input should be"),
        ("", b"", {}, "Choose a file"),
    ],
)
def test_a_bad_file_or_option_is_a_message_on_the_page_and_writes_nothing(
    client, db, csrf, filename, content, fields, message
):
    response = upload(client, csrf, filename, content, **fields)
    assert response.status_code == 422
    assert message in html(response).select_one(".error").text
    assert stored_prompts(db) == []


def test_a_line_nested_too_deeply_for_the_parser_is_a_skipped_row(client, db, csrf):
    content = jsonl({"prompt": "fine"}) + b"\n" + b"[" * 200_000
    report = report_of(upload(client, csrf, "p.jsonl", content))
    assert (report["created"], report["rows"]) == (1, [("2", "invalid JSON (nested too deeply)")])


def test_an_upload_over_the_body_limit_is_refused(settings, engine, session_factory, admin, db):
    app = create_app(settings.model_copy(update={"max_body_bytes": 4096}), engine=engine)
    app.state.session_factory = session_factory
    with TestClient(app) as client:
        csrf = browser_login(client, admin.username)
        response = upload(client, csrf, "p.jsonl", jsonl(*[{"prompt": "x" * 100}] * 100))
    assert response.status_code == 413
    page = html(response)
    assert "over the limit of 4 KiB (ALIGNLOOP_MAX_BODY_BYTES)" in page.text
    assert page.select_one("a[href='/admin/data']").text == "Back to the page you were on"
    assert stored_prompts(db) == []


def test_nul_characters_are_skipped_rows_not_database_errors(client, db, csrf):
    content = jsonl(
        {"prompt": "a\u0000b"}, {"prompt": "fine", "source": "s\u0000"}, {"prompt": "ok"}
    )
    report = report_of(upload(client, csrf, "p.jsonl", content))
    assert (report["created"], report["skipped"]) == (1, 2)
    assert "NUL" in report["rows"][0][1]


def test_the_api_runs_the_same_import(client, db, admin):
    response = client.post(
        "/api/prompts",
        files={"file": ("p.jsonl", jsonl({"prompt": "One"}, {"prompt": "One"}, {"prompt": ""}))},
        data={"tags": "api"},
        headers=api_key_for(db, admin),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["created"], body["duplicates"], body["repeated_in_file"]) == (1, 1, 1)
    assert body["skipped"][0]["line"] == 3
    assert stored_prompts(db)[0].tags == ["api"]
    bad = client.post(
        "/api/prompts", files={"file": ("p.json", b"{")}, headers=api_key_for(db, admin)
    )
    assert bad.status_code == 422 and "Invalid JSON" in problem(bad)


@pytest.mark.parametrize("wrapped", [False, True], ids=["list", "object"])
def test_the_api_imports_a_json_body_with_the_same_report(client, db, admin, wrapped):
    rows = [{"prompt": "One"}, {"messages": [{"role": "user", "content": "One"}]}, {"prompt": ""}]
    response = client.post(
        "/api/prompts",
        json={"prompts": rows} if wrapped else rows,
        headers=api_key_for(db, admin),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["file_format"], body["created"], body["repeated_in_file"]) == ("json", 1, 1)
    assert body["skipped"][0]["line"] == 3
    assert [prompt.id for prompt in stored_prompts(db)] == body["created_ids"]


def test_the_api_refuses_a_body_that_is_neither_json_nor_an_upload(client, db, admin):
    headers = api_key_for(db, admin)
    text = client.post(
        "/api/prompts",
        content=b'[{"prompt": "a"}]',
        headers={**headers, "Content-Type": "text/plain"},
    )
    assert text.status_code == 415 and "multipart/form-data" in text.json()["detail"]
    no_file = client.post("/api/prompts", files={"other": ("p.jsonl", b"{}")}, headers=headers)
    assert no_file.status_code == 422 and "`file`" in problem(no_file)
    not_prompts = client.post("/api/prompts", json={"prompt": "a"}, headers=headers)
    assert not_prompts.status_code == 422 and '{"prompts": [...]}' in problem(not_prompts)
    assert stored_prompts(db) == []


# --- browsing ------------------------------------------------------------------------------------


def add_prompts(db, *records: dict) -> None:
    prompts, skipped = parse_prompts(jsonl(*records), "jsonl")
    assert skipped == []
    prompt_store.add_prompts(db, prompts=prompts, created_by=None)
    db.commit()


def listed_ids(response) -> list[int]:
    assert response.status_code == 200, response.text
    cells = [row.select("td") for row in html(response).select("table.data-table tbody tr")]
    return [int(row[0].text.split()[0]) for row in cells if len(row) > 1]


def prompt_ids(db, *contents: str) -> list[int]:
    """Ids of the prompts whose last message is one of `contents`, newest first."""
    rows = db.scalars(select(Prompt).order_by(Prompt.id.desc()))
    return [row.id for row in rows if row.messages[-1]["content"] in contents]


def test_search_finds_words_in_messages_and_matches_wildcards_literally(client, db, csrf):
    add_prompts(
        db,
        {
            "messages": [
                {"role": "system", "content": "You answer about cats."},
                {"role": "user", "content": "Are you 100% sure?"},
            ]
        },
        {"prompt": "One hundred percent"},
        {"prompt": "snake_case or camelCase?"},
        {"prompt": "snakeXcase"},
        {"prompt": "把这句话翻译成英文"},
    )

    def search(text: str) -> list[int]:
        return listed_ids(client.get("/admin/data/prompts", params={"q": text}))

    assert search("CATS") == prompt_ids(db, "Are you 100% sure?")  # the system turn counts too
    assert search("100%") == prompt_ids(db, "Are you 100% sure?")
    assert search("%") == prompt_ids(db, "Are you 100% sure?")
    assert search("e_c") == prompt_ids(db, "snake_case or camelCase?")
    assert search("翻译") == prompt_ids(db, "把这句话翻译成英文")
    assert search("user") == []  # the JSON keys and roles are not searched


def test_prompts_filter_by_tag_split_and_source(client, db, csrf):
    add_prompts(
        db,
        {"prompt": "a", "tags": ["maths", "easy"], "source": "book"},
        {"prompt": "b", "tags": ["maths"], "split": "eval"},
        {"prompt": "c", "tags": ["mathsy"], "source": "book"},
    )

    def filtered(**params: str) -> list[int]:
        return listed_ids(client.get("/admin/data/prompts", params=params))

    assert filtered(tag="maths") == prompt_ids(db, "a", "b")
    assert filtered(tag="maths", split="eval") == prompt_ids(db, "b")
    assert filtered(source="book", split="", q="", tag="") == prompt_ids(db, "a", "c")


def test_prompt_list_shows_tags_and_task_counts(client, db, csrf):
    task = create_task(db, prompt="Counted prompt")
    create_task(db)
    db.commit()
    row = html(client.get("/admin/data/prompts", params={"q": "Counted"})).select_one("tbody tr")
    assert row.select("td")[0].text == str(task.prompt_id)
    assert row.select("td")[-1].text.strip() == "1"
    assert "Counted prompt" in row.text


def test_counts_on_the_data_pages_say_one_prompt_not_one_prompts(client, db, csrf):
    add_prompts(db, {"prompt": "the only one"})
    pager = html(client.get("/admin/data/prompts")).select_one(".pager").text
    assert "1 prompt" in pager and "1 prompts" not in pager
    intro = " ".join(html(client.get("/admin/data")).select_one("main").text.split())
    assert "1 prompt so far." in intro


def test_pages_walk_every_row_once_newest_first_and_keep_the_filters(client, db, csrf):
    add_prompts(db, *({"prompt": f"bulk {n}", "tags": ["bulk"]} for n in range(120)))
    add_prompts(db, *({"prompt": f"other {n}"} for n in range(5)))
    expected = [p.id for p in reversed(stored_prompts(db)) if "bulk" in p.tags]
    pages, url = [], "/admin/data/prompts?tag=bulk"
    while url:
        response = client.get(url)
        pages.append(listed_ids(response))
        assert "120 prompts" in html(response).select_one(".pager").text
        older = html(response).select_one(".pager a[rel=next]")
        url = f"/admin/data/prompts{older['href']}" if older else None
        if older:
            assert parse_qs(urlsplit(older["href"]).query)["tag"] == ["bulk"]
    assert [len(page) for page in pages] == [50, 50, 20]
    assert [row for page in pages for row in page] == expected

    last = html(client.get(f"/admin/data/prompts?tag=bulk&before={pages[1][-1]}"))
    newer = last.select_one(".pager a[rel=prev]")["href"]
    assert listed_ids(client.get(f"/admin/data/prompts{newer}")) == pages[1]
    first = html(client.get(f"/admin/data/prompts?tag=bulk&after={pages[1][0]}"))
    assert first.select_one(".pager a[rel=prev]") is None


def test_tasks_filter_by_status_kind_gold_and_prompt(client, db, csrf):
    plain, done, gold, ab = (create_task(db) for _ in range(4))
    done.status, done.judgement_count = TaskStatus.COMPLETE, 2
    gold.is_gold = True
    ab.kind = TaskKind.AB_EVAL
    db.commit()

    def filtered(**params: str) -> list[int]:
        return listed_ids(client.get("/admin/data/tasks", params=params))

    assert filtered() == [ab.id, gold.id, done.id, plain.id]
    assert filtered(status="complete") == [done.id]
    assert filtered(kind="ab_eval", status="", gold="", prompt="") == [ab.id]
    assert filtered(gold="true") == [gold.id]
    assert gold.id not in filtered(gold="false")
    assert filtered(prompt=str(plain.prompt_id)) == [plain.id]
    row = html(client.get("/admin/data/tasks", params={"status": "complete"})).select_one(
        "tbody tr"
    )
    assert [cell.text for cell in row.select("td")[4:6]] == ["2", "2/2"]


@pytest.fixture
def judged_task(db, make_user):
    """A task with a model's answer and another, judged by rita (then corrected) and otto."""
    rita, otto = make_user(Role.RATER, "rita"), make_user(Role.RATER, "otto")
    version = ModelVersion(
        name="policy-v3", kind=ModelKind.POLICY, status=ModelStatus.READY, path="v3"
    )
    db.add(version)
    task = create_task(
        db, prompt="<script>alert('prompt')</script>", texts=["Kind.", "Rude <b>!</b>"]
    )
    kind, rude = (link.response_id for link in task.responses)
    db.get(Response, kind).model_version_id = version.id
    rewrite = Response(prompt_id=task.prompt_id, author_id=rita.id, text="Kinder still.")
    db.add(rewrite)
    db.flush()
    original = Judgement(
        task_id=task.id,
        rater_id=rita.id,
        ranking=[kind, rude],
        ratings={str(kind): {"helpfulness": 6}},
        flags={str(rude): ["unsafe", "off_topic"]},
        critique="B is rude <script>alert('critique')</script>",
        rewrite_response_id=rewrite.id,
        time_spent_ms=12_345,
    )
    db.add_all([original, Judgement(task_id=task.id, rater_id=otto.id, ranking=[[kind, rude]])])
    db.flush()
    db.add(
        Judgement(
            task_id=task.id, rater_id=rita.id, ranking=[rude, kind], supersedes_id=original.id
        )
    )
    db.commit()
    return task


def test_the_task_page_shows_responses_and_every_judgement(client, db, csrf, judged_task):
    page = html(client.get(f"/admin/data/tasks/{judged_task.id}"))
    responses = page.select(".response")
    assert [r.select_one("h3").text for r in responses] == ["A", "B"]
    assert "policy-v3" in responses[0].text and "Rude <b>!</b>" in responses[1].text
    judgements = page.select("article.judgement")
    assert [j.select_one(".rater").text for j in judgements] == ["rita", "otto", "rita"]
    assert [j.select_one(".ranking").text.split(" (")[0] for j in judgements] == [
        "A > B",
        "A = B",
        "B > A",
    ]
    original, _, correction = judgements
    assert "corrected by" in original.text and "superseded" in original["class"]
    assert f"correction of #{original['id'].split('-')[1]}" in correction.text
    assert "A: helpfulness 6" in original.text and "B: unsafe, off_topic" in original.text
    assert "Kinder still." in original.text and "12.3 s" in original.text


def test_unknown_tasks_are_a_404_page(client, csrf):
    response = client.get("/admin/data/tasks/987654", headers={"Accept": "text/html"})
    assert response.status_code == 404 and "<html" in response.text
    assert client.get("/admin/data/tasks/99999999999999999999999").status_code == 422


def test_user_text_is_escaped_on_every_page(client, db, csrf, judged_task):
    add_prompts(db, {"prompt": "x", "tags": ['"><img src=x onerror=alert(1)>']})
    pages = [
        client.get("/admin/data/prompts").text,
        client.get("/admin/data/tasks").text,
        client.get(f"/admin/data/tasks/{judged_task.id}").text,
        client.get("/admin/data/judgements").text,
    ]
    for text in pages:
        assert "<script>alert" not in text and "<img src=x" not in text and "<b>!" not in text
    assert "&lt;script&gt;alert(&#39;prompt&#39;)" in pages[2]
    assert "&lt;script&gt;alert(&#39;critique&#39;)" in pages[3]


def test_judgements_filter_by_rater_task_and_dates_newest_first(client, db, csrf, judged_task):
    other = create_task(db)
    otto = accounts.get_user_by_username(db, username="otto")
    old = Judgement(
        task_id=other.id,
        rater_id=otto.id,
        ranking=[link.response_id for link in other.responses],
        created_at=datetime(2025, 3, 1, 23, 30, tzinfo=UTC),
    )
    db.add(old)
    db.commit()
    on_task = [
        j.id for j in db.scalars(select(Judgement).where(Judgement.task_id == judged_task.id))
    ]

    def filtered(**params: str) -> list[int]:
        return listed_ids(client.get("/admin/data/judgements", params=params))

    assert filtered() == sorted([*on_task, old.id], reverse=True)
    assert filtered(rater="OTTO") == [old.id, on_task[1]]
    assert filtered(rater="nobody") == []
    assert filtered(task=str(judged_task.id)) == sorted(on_task, reverse=True)
    assert filtered(since="2025-03-01", until="2025-03-01") == [old.id]
    assert filtered(until="2025-02-28") == []
    assert old.id not in filtered(since=(datetime.now(UTC) - timedelta(days=1)).date().isoformat())
    page = html(client.get("/admin/data/judgements", params={"task": judged_task.id}))
    assert [cell.text for cell in page.select("td.rater")] == ["rita", "otto", "rita"]
    assert "corrects #" in page.select_one("tbody tr").text


DATA_PAGES = [
    "/admin/data",
    "/admin/data/prompts",
    "/admin/data/tasks",
    "/admin/data/tasks/1",
    "/admin/data/judgements",
]


@pytest.mark.parametrize("path", DATA_PAGES)
def test_raters_get_403_on_every_data_page(client, rater, path):
    browser_login(client, rater.username)
    assert client.get(path, headers={"Accept": "text/html"}).status_code == 403


def test_raters_cannot_import(client, db, rater):
    csrf = browser_login(client, rater.username)
    assert upload(client, csrf, "p.jsonl", jsonl({"prompt": "x"})).status_code == 403
    assert stored_prompts(db) == []


# --- export --------------------------------------------------------------------------------------


def test_the_export_form_downloads_every_format_for_a_signed_in_admin(
    client, db, csrf, judged_task, settings
):
    round_ = snapshot_round(db, settings.snapshots_dir)
    form = html(client.get("/admin/data")).select_one("form[action='/api/export/preferences']")
    assert form["method"] == "get"
    formats = [option.text for option in form.select("select[name=format] option")]
    rounds = [option["value"] for option in form.select("select[name=round] option")]
    assert formats == list(export.FORMATS) and rounds == ["", str(round_.id)]
    for file_format in formats:
        for round_value in rounds:
            params = {"format": file_format, "round": round_value}
            response = client.get(form["action"], params=params)
            assert response.status_code == 200, (params, response.text)
            suffix = f"-round-{round_value}" if round_value else ""
            expected = f'attachment; filename="alignloop-{file_format}{suffix}.jsonl"'
            assert response.headers["content-disposition"] == expected
            assert response.content.endswith(b"\n")


def statements_during(connection, run) -> int:
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    event.listen(connection, "before_cursor_execute", count)
    try:
        run()
    finally:
        event.remove(connection, "before_cursor_execute", count)
    return len(statements)


def judge_tasks(db, rater, count: int) -> None:
    for _ in range(count):
        task = create_task(db, responses=3)
        ranking = [link.response_id for link in task.responses]
        db.add(Judgement(task_id=task.id, rater_id=rater.id, ranking=ranking))
    db.commit()


def test_the_raw_export_reads_in_batches_not_row_by_row(db, connection, rater, monkeypatch):
    judge_tasks(db, rater, 3)
    few = statements_during(connection, lambda: list(export.raw_lines(db)))
    judge_tasks(db, rater, 30)
    lines: list[bytes] = []
    many = statements_during(connection, lambda: lines.extend(export.raw_lines(db)))
    # the cut-off, two look-ups, the batch with four for what it refers to, ending its read,
    # and the empty batch that ends the export
    assert len(lines) == 33 and many == few <= 12

    monkeypatch.setattr(export, "RAW_BATCH_SIZE", 7)  # batches end mid-way: nothing lost
    assert list(export.raw_lines(db)) == lines
    assert (
        list(export.raw_lines(db, up_to_judgement_id=json.loads(lines[9])["judgement_id"]))
        == (lines[:10])
    )


def test_a_raw_row_holds_everything_the_rater_saw_and_said(db, rater):
    version = ModelVersion(name="v1", kind=ModelKind.POLICY, status=ModelStatus.READY, path="v1")
    guidelines = GuidelineVersion(version=4, body="Be kind.")
    db.add_all([version, guidelines])
    task = create_task(db, texts=["first", "second"])
    first, second = (link.response_id for link in task.responses)
    db.get(Response, first).model_version_id = version.id
    rewrite = Response(prompt_id=task.prompt_id, author_id=rater.id, text="better")
    shown = Assignment(
        task_id=task.id,
        rater_id=rater.id,
        response_order=[second, first],
        expires_at=datetime.now(UTC),
    )
    db.add_all([rewrite, shown])
    db.flush()
    judgement = Judgement(
        task_id=task.id,
        rater_id=rater.id,
        assignment_id=shown.id,
        ranking=[second, first],
        strength=2,
        ratings={str(second): {"helpfulness": 5}},
        flags={str(first): ["broken"]},
        critique="second is clearer",
        rewrite_response_id=rewrite.id,
        time_spent_ms=900,
        guideline_version_id=guidelines.id,
    )
    db.add(judgement)
    db.commit()
    [line] = export.raw_lines(db)
    assert json.loads(line) == {
        "judgement_id": judgement.id,
        "supersedes_id": None,
        "task_id": task.id,
        "task_kind": "compare",
        "rater_id": rater.id,
        "prompt": db.get(Prompt, task.prompt_id).messages,
        "responses": [
            {"id": first, "text": "first", "model_version": "v1", "human": False},
            {"id": second, "text": "second", "model_version": None, "human": False},
        ],
        "shown_order": [second, first],
        "ranking": [second, first],
        "strength": 2,
        "all_bad": False,
        "ratings": {str(second): {"helpfulness": 5}},
        "flags": {str(first): ["broken"]},
        "critique": "second is clearer",
        "rewrite": "better",
        "time_spent_ms": 900,
        "guideline_version": 4,
        "created_at": judgement.created_at.isoformat(),
    }
