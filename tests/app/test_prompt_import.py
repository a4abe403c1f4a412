"""Prompt files: formats, shorthand, per-row reasons, deduplication, and the demo set."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from app import bootstrap, crud
from app.models import Prompt
from app.prompt_import import UnreadableFile, detect_format, parse_prompts


def jsonl(*records) -> bytes:
    return "\n".join(json.dumps(record, ensure_ascii=False) for record in records).encode()


def test_jsonl_rows_are_validated_one_by_one():
    content = (
        jsonl(
            {"prompt": "What is RLHF?", "tags": ["question"]},
            {"messages": [{"role": "user", "content": "Hello"}], "split": "eval"},
            {"messages": [{"role": "assistant", "content": "I end the chat"}]},
            {"prompt": "x", "owner_id": 7},
        )
        + b"\n{not json}\n"
    )
    prompts, skipped = parse_prompts(content, "jsonl")
    assert [prompt.messages[-1].content for prompt in prompts] == ["What is RLHF?", "Hello"]
    assert prompts[1].split == "eval"
    assert [row.line for row in skipped] == [3, 4, 5]
    assert "last message must be a user turn" in skipped[0].reason
    assert "owner_id" in skipped[1].reason
    assert "invalid JSON" in skipped[2].reason


def test_shorthand_with_a_system_prompt_becomes_two_messages():
    prompts, _ = parse_prompts(jsonl({"prompt": "Hi", "system": "Be brief."}), "jsonl")
    assert [message.role for message in prompts[0].messages] == ["system", "user"]


def test_csv_uses_the_shorthand_columns_with_semicolon_tags():
    content = "prompt,tags,split\nTranslate 'cat' to French,translation; easy,train\n,empty,train\n"
    prompts, skipped = parse_prompts(content.encode(), "csv")
    assert prompts[0].tags == ["translation", "easy"]
    assert [row.line for row in skipped] == [3]


def test_json_accepts_a_list_or_an_object_with_prompts():
    listed, _ = parse_prompts(json.dumps([{"prompt": "a"}]).encode(), "json")
    wrapped, _ = parse_prompts(json.dumps({"prompts": [{"prompt": "a"}]}).encode(), "json")
    assert listed == wrapped


@pytest.mark.parametrize(
    ("content", "file_format"),
    [(b"\xff\xfe", "jsonl"), (b'{"prompts": 3}', "json"), (b"text,other\n1,2\n", "csv")],
)
def test_unreadable_files_are_refused_as_a_whole(content, file_format):
    with pytest.raises(UnreadableFile):
        parse_prompts(content, file_format)


def test_the_format_follows_the_file_extension():
    assert detect_format("Prompts.JSONL") == "jsonl"
    with pytest.raises(UnreadableFile):
        detect_format("prompts.xlsx")


def test_duplicates_are_detected_across_whitespace_and_imports(db):
    prompts, _ = parse_prompts(
        jsonl({"prompt": "What is  RLHF?"}, {"prompt": "What is RLHF? "}, {"prompt": "Other"}),
        "jsonl",
    )
    first = crud.add_prompts(db, prompts=prompts, created_by=None)
    assert first[:3] == (2, 0, 1)
    stored = db.scalars(select(Prompt.id).order_by(Prompt.id)).all()
    assert first.created_ids == stored
    assert crud.add_prompts(db, prompts=prompts, created_by=None) == (0, 2, 1, [])
    assert crud.count_prompts(db) == 2


def test_the_demo_set_is_varied_and_valid():
    prompts, skipped = parse_prompts(bootstrap.DEMO_PROMPTS.read_bytes(), "jsonl")
    assert skipped == [] and len(prompts) >= 100
    tags = {tag for prompt in prompts for tag in prompt.tags}
    assert {"question", "how-to", "summarisation", "translation", "coding", "advice"} <= tags
    assert sum("zh" in prompt.tags for prompt in prompts) >= 10
    assert any(prompt.split == "eval" for prompt in prompts)


def test_first_start_creates_one_admin_and_loads_the_demo_once(db):
    password = bootstrap.create_first_admin(db)
    assert password and len(password) >= 16
    assert crud.authenticate_user(db, username="admin", password=password) is not None
    assert bootstrap.create_first_admin(db) is None
    assert bootstrap.load_demo_prompts(db) >= 100
    assert bootstrap.load_demo_prompts(db) == 0
