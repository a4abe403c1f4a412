"""Prompt files: formats, shorthand, per-row reasons, deduplication, the demo set, and a large
upload beside other requests."""

from __future__ import annotations

import asyncio
import io
import json
import time

import httpx
import pytest
from sqlalchemy import select

from app.db import make_session_factory, session_scope
from app.domain import accounts, bootstrap, prompt_store
from app.domain.prompt_import import UnreadableFile, detect_format, parse_prompts
from app.models import Prompt, Role
from tests.helpers import api_key_for
from tests.live_server import alignloop_web


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
    first = prompt_store.add_prompts(db, prompts=prompts, created_by=None)
    assert first[:3] == (2, 0, 1)
    stored = db.scalars(select(Prompt.id).order_by(Prompt.id)).all()
    assert first.created_ids == stored
    assert prompt_store.add_prompts(db, prompts=prompts, created_by=None) == (0, 2, 1, [])
    assert prompt_store.count_prompts(db) == 2


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
    assert accounts.authenticate_user(db, username="admin", password=password) is not None
    assert bootstrap.create_first_admin(db) is None
    assert bootstrap.load_demo_prompts(db) >= 100
    assert bootstrap.load_demo_prompts(db) == 0


LARGE_UPLOAD_BYTES = 15 * 2**20  # with the multipart framing, just under the default 16 MiB limit
HEALTHZ_P99_BOUND_S = 0.06
"""The 99th percentile of `/healthz` during a large upload: about 0.02 s here, 2-10 ms idle.
Before, with the whole file's rows alive at once, it was 0.10-0.15 s: each of the garbage
collector's full passes (which hold the interpreter lock, so the event loop waits too) took
longer than the last, up to 0.4-0.5 s for this file."""


def large_jsonl(size: int) -> tuple[bytes, int]:
    """A JSON Lines file of about `size` bytes of distinct prompts, and its number of rows."""
    lines, total = [], 0
    while total < size:
        lines.append(json.dumps({"prompt": f"prompt {len(lines)} " + "x" * 200}) + "\n")
        total += len(lines[-1])
    return "".join(lines).encode(), len(lines)


async def healthz_during_upload(
    base_url: str, headers: dict[str, str], content: bytes
) -> tuple[list[float], httpx.Response]:
    """The latencies of `/healthz`, asked one after another while `content` is uploaded, and
    the upload's response."""
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=600) as client:

        def upload(body: bytes):
            files = {"file": ("prompts.jsonl", io.BytesIO(body))}  # sent in 64 KiB chunks
            return client.post("/api/prompts", files=files)

        await upload(b'{"prompt": "warm up"}\n')  # first-use costs (imports, threads) aside
        uploading = asyncio.create_task(upload(content))
        latencies = []
        while not uploading.done():
            started = time.perf_counter()
            assert (await client.get("/healthz")).status_code == 200
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
        return latencies, await uploading


@pytest.mark.serial
def test_the_event_loop_answers_while_a_large_upload_is_imported(committed_engine, tmp_path):
    """`alignloop web` in a process of its own, as in production, takes a 15 MiB file."""
    with session_scope(make_session_factory(committed_engine)) as db:
        admin = accounts.create_user(db, username="ada", password="long enough pw", role=Role.ADMIN)
        headers = api_key_for(db, admin)
    content, rows = large_jsonl(LARGE_UPLOAD_BYTES)
    with alignloop_web(committed_engine, tmp_path / "data", tmp_path / "web.log") as server:
        latencies, response = asyncio.run(healthz_during_upload(server.base_url, headers, content))
    assert response.status_code == 201, response.text
    assert response.json()["created"] == rows
    assert len(latencies) > 100
    p99 = sorted(latencies)[int(0.99 * (len(latencies) - 1))]
    assert p99 < HEALTHZ_P99_BOUND_S, f"p99 {p99:.3f} s, slowest {max(latencies):.3f} s"
