"""`/v1` with the official `openai` client against a real server running the tiny model."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from app.db import session_scope
from app.domain import model_registry
from app.models import ModelVersion, Prompt, ServedCompletion, Task, utcnow
from tests.helpers import serving_tiny_model
from tests.live_server import wait_for
from worker.model_store import ModelStore

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def world(model_settings):
    """The tiny model as version `base`, a rater with an API key, and a live server."""
    with serving_tiny_model(model_settings) as world:
        yield world


@pytest.fixture
def client(world) -> openai.OpenAI:
    return openai.OpenAI(base_url=world["url"] + "/v1", api_key=world["key"], max_retries=0)


def test_models_lists_the_versions_and_current(client):
    names = {model.id for model in client.models.list()}
    assert names == {"base", "current"}


def test_a_plain_completion_has_openai_shape_usage_and_version(client):
    raw = client.chat.completions.with_raw_response.create(
        model="current", messages=HELLO, max_tokens=8, temperature=0
    )
    completion = raw.parse()
    assert raw.headers["x-model-version"] == "base"
    assert completion.id.startswith("chatcmpl-") and completion.model == "base"
    [choice] = completion.choices
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in {"stop", "length"}
    usage = completion.usage
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_streaming_sends_the_same_text_in_chunks(client):
    whole = client.chat.completions.create(
        model="base", messages=HELLO, max_tokens=12, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model="base",
            messages=HELLO,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in {"stop", "length"}
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_the_stream_ends_with_done(world):
    body = {"model": "base", "messages": HELLO, "max_tokens": 4, "stream": True}
    headers = {"Authorization": f"Bearer {world['key']}"}
    response = httpx.post(world["url"] + "/v1/chat/completions", json=body, headers=headers)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.rstrip().endswith("data: [DONE]")


def test_a_seed_out_of_range_is_refused_and_harms_no_other_request(world):
    headers = {"Authorization": f"Bearer {world['key']}"}
    url = world["url"] + "/v1/chat/completions"
    body = {"model": "base", "messages": HELLO, "max_tokens": 40, "min_tokens": 40}
    with httpx.stream("POST", url, json={**body, "stream": True}, headers=headers) as streaming:
        lines = streaming.iter_lines()
        first = next(lines)
        for bad in ({"seed": 2**70}, {"seed": -(2**70)}, {"min_tokens": 2**70}):
            refused = httpx.post(url, json={**body, **bad}, headers=headers, timeout=10)
            assert refused.status_code == 400, bad
            assert refused.json()["error"]["param"] in {"seed", "min_tokens"}
        rest = [line for line in lines if line]
    assert first.startswith("data: {") and rest[-1] == "data: [DONE]"
    assert not any('"error"' in line for line in rest)
    edge = httpx.post(url, json={**body, "seed": 2**63 - 1, "n": 2}, headers=headers, timeout=30)
    assert edge.status_code == 200 and len(edge.json()["choices"]) == 2


def test_a_generation_that_fails_midstream_ends_with_an_error_event_and_done(world):
    engine = world["app"].state.inference.server.engine("base", _base_path(world))
    original = engine._advance

    def failing(row, token):
        if row.generated > 2:
            raise RuntimeError("injected")
        return original(row, token)

    engine._advance = failing
    try:
        body = {"model": "base", "messages": HELLO, "max_tokens": 20, "min_tokens": 10}
        headers = {"Authorization": f"Bearer {world['key']}"}
        response = httpx.post(
            world["url"] + "/v1/chat/completions",
            json={**body, "stream": True},
            headers=headers,
            timeout=30,
        )
    finally:
        engine._advance = original
    lines = [line for line in response.text.splitlines() if line]
    assert lines[-1] == "data: [DONE]"
    assert '"type": "server_error"' in lines[-2]


def _base_path(world) -> str:
    with session_scope(world["factory"]) as db:
        return model_registry.served_policy(db, name="base").path


def test_n_gives_several_choices_and_a_seed_repeats_them(client):
    ask = {"model": "base", "messages": HELLO, "max_tokens": 10, "n": 2, "seed": 7}
    first = client.chat.completions.create(**ask)
    again = client.chat.completions.create(**ask)
    assert [choice.index for choice in first.choices] == [0, 1]
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]


def test_max_tokens_and_stop_end_a_choice(client):
    short = client.chat.completions.create(model="base", messages=HELLO, max_tokens=2)
    assert short.choices[0].finish_reason == "length"
    assert short.usage.completion_tokens == 2


@pytest.mark.parametrize(
    ("request_", "error", "status"),
    [
        ({"model": "nope"}, openai.NotFoundError, 404),
        ({"max_tokens": 10_000_000}, openai.BadRequestError, 400),
        ({"messages": []}, openai.BadRequestError, 400),
        ({"n": 9}, openai.BadRequestError, 400),
        ({"temperature": 3}, openai.BadRequestError, 400),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, openai.BadRequestError, 400),
    ],
)
def test_bad_requests_get_openai_style_errors(client, request_, error, status):
    with pytest.raises(error) as raised:
        client.chat.completions.create(**{"model": "base", "messages": HELLO, **request_})
    assert raised.value.status_code == status
    body = raised.value.body
    assert set(body) >= {"message", "type"}
    if status == 404:
        assert body["code"] == "model_not_found"


def test_a_wrong_key_or_a_cookie_is_not_enough(world):
    wrong = openai.OpenAI(base_url=world["url"] + "/v1", api_key="al_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    cookie_only = httpx.get(world["url"] + "/v1/models", cookies={"alignloop_session": "x"})
    assert cookie_only.status_code == 401 and cookie_only.json()["error"]["type"]


def test_per_key_rate_limits_answer_429_with_retry_after(world, client):
    world["app"].state.limiter.per_minute = 2
    for _ in range(2):
        client.chat.completions.create(model="base", messages=HELLO, max_tokens=1)
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="base", messages=HELLO, max_tokens=1)
    assert int(raised.value.response.headers["retry-after"]) >= 1


def running(world) -> int:
    engines = world["app"].state.inference.server._engines.values()
    return sum(engine.busy for engine in engines)


def test_a_client_that_disconnects_cancels_its_generation(world):
    body = {"model": "base", "messages": HELLO, "max_tokens": 1500, "stream": True}
    headers = {"Authorization": f"Bearer {world['key']}"}
    url = world["url"] + "/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=headers) as response:
        next(response.iter_lines())
        assert running(world) == 1
    wait_for(lambda: running(world) == 0, 10, "the generation to be cancelled")


def test_every_completion_is_recorded_for_feedback(world, client):
    completion = client.chat.completions.create(model="base", messages=HELLO, max_tokens=3)
    with world["factory"]() as db:
        stored = db.scalar(select(ServedCompletion))
    assert stored.public_id == completion.id
    assert stored.choices[0]["text"] == completion.choices[0].message.content


def test_feedback_turns_a_completion_into_rating_material(world, client):
    completion = client.chat.completions.create(model="base", messages=HELLO, max_tokens=3)
    headers = {"Authorization": f"Bearer {world['key']}"}
    url = world["url"] + "/api/feedback"
    better = {"completion_id": completion.id, "rating": "down", "preferred": "Hello there!"}
    response = httpx.post(url, json=better, headers=headers)
    assert response.status_code == 201
    with world["factory"]() as db:
        prompt = db.scalar(select(Prompt))
        task = db.get(Task, response.json()["task_id"])
        assert prompt.messages == HELLO and prompt.source == "feedback"
        texts = {link.response.text for link in task.responses}
        assert texts == {completion.choices[0].message.content, "Hello there!"}
    missing = httpx.post(url, json={**better, "completion_id": "chatcmpl-nope"}, headers=headers)
    assert missing.status_code == 404
    empty = httpx.post(url, json={"completion_id": completion.id}, headers=headers)
    assert empty.status_code == 422


def test_promotion_under_load_drops_nothing(world, client, model_settings):
    store = ModelStore(model_settings)
    model, tokenizer = store.load_source("tiny-random")
    store.save("v1", model, tokenizer)
    with session_scope(world["factory"]) as db:
        base = db.scalar(select(ModelVersion).where(ModelVersion.name == "base"))
        db.add(ModelVersion(name="v1", kind="policy", status="ready", path="v1", parent_id=base.id))
    with session_scope(world["factory"]) as db:
        new_id = db.scalar(select(ModelVersion.id).where(ModelVersion.name == "v1"))

    def ask(_):
        raw = client.chat.completions.with_raw_response.create(
            model="current", messages=HELLO, max_tokens=24
        )
        return raw.headers["x-model-version"], raw.parse().choices[0].finish_reason

    with ThreadPoolExecutor(max_workers=32) as pool:
        futures = [pool.submit(ask, index) for index in range(32)]
        time.sleep(0.5)  # requests are in flight on `base`
        with session_scope(world["factory"]) as db:
            model_registry.promote(db, version_id=new_id)
        answers = [future.result() for future in futures]
    assert {version for version, _ in answers} <= {"base", "v1"}
    assert all(reason in {"stop", "length"} for _, reason in answers)
    after = client.chat.completions.with_raw_response.create(
        model="current", messages=HELLO, max_tokens=2
    )
    assert after.headers["x-model-version"] == "v1"
    assert utcnow()  # the clock used for promotion is the one the app reads


def test_the_playground_streams_over_the_same_path_for_signed_in_users(world):
    from tests.helpers import browser_login, html

    with httpx.Client(base_url=world["url"]) as browser:
        csrf = browser_login(browser, "sdk", "long enough pw")
        page = html(browser.get("/playground"))
        assert [option["value"] for option in page.select("#model-a option")] == ["base"]
        body = {"model": "current", "messages": HELLO, "max_tokens": 5}
        refused = browser.post("/playground/chat", json=body)
        assert refused.status_code == 403  # no CSRF token
        answer = browser.post("/playground/chat", json=body, headers={"X-CSRF-Token": csrf})
        assert answer.headers["x-model-version"] == "base"
        assert answer.text.rstrip().endswith("data: [DONE]")
        completion_id = answer.text.split('"id": "')[1].split('"')[0]
        thumbs = browser.post(
            "/api/feedback",
            json={"completion_id": completion_id, "rating": "up"},
            headers={"X-CSRF-Token": csrf},
        )
        assert thumbs.status_code == 201


def test_serving_metrics_count_an_answer_in_flight_and_after(world, client):
    def sample(name: str) -> float:
        text = httpx.get(world["url"] + "/metrics").text
        families = text_string_to_metric_families(text)
        return next(s.value for family in families for s in family.samples if s.name == name)

    # Long enough that the answer is still being generated after its first chunk (a short one
    # can be sent whole before the client reads it).
    long = {"max_tokens": 400, "extra_body": {"min_tokens": 400}}
    stream = client.chat.completions.create(
        model="base", messages=HELLO, temperature=0, stream=True, **long
    )
    next(iter(stream))
    assert sample("alignloop_chat_requests_in_flight") == 1
    list(stream)
    wait_for(lambda: sample("alignloop_chat_requests_in_flight") == 0, 5, "the answer to end")
    assert sample("alignloop_chat_requests_waiting") == 0
    assert sample("alignloop_time_to_first_token_seconds_count") == 1
    assert sample("alignloop_generation_duration_seconds_count") == 1
    assert sample("alignloop_generation_tokens_per_second_sum") > 0


def test_streamed_logprobs_and_text_match_the_whole_answer_on_both_endpoints(client):
    ask = {"model": "base", "max_tokens": 8, "temperature": 0}
    chat = {**ask, "messages": HELLO, "logprobs": True, "top_logprobs": 2}
    whole = client.chat.completions.create(**chat).choices[0]
    chunks = [
        c.choices[0] for c in client.chat.completions.create(**chat, stream=True) if c.choices
    ]
    streamed = [entry for chunk in chunks if chunk.logprobs for entry in chunk.logprobs.content]
    assert streamed == whole.logprobs.content
    assert "".join(chunk.delta.content or "" for chunk in chunks) == whole.message.content
    text = {**ask, "prompt": "Once upon a time", "logprobs": 2}
    plain = client.completions.create(**text).choices[0]
    pieces = [c.choices[0] for c in client.completions.create(**text, stream=True) if c.choices]
    assert "".join(piece.text for piece in pieces) == plain.text
    tokens = [token for piece in pieces if piece.logprobs for token in piece.logprobs.tokens]
    assert tokens == plain.logprobs.tokens and "".join(tokens).startswith(plain.text)


def test_unknown_fields_are_ignored_named_in_a_header_and_not_recorded(world):
    body = {"model": "base", "messages": HELLO, "max_tokens": 2, "zeta": 1, "alpha": {}}
    headers = {"Authorization": f"Bearer {world['key']}"}
    response = httpx.post(world["url"] + "/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["x-ignored-fields"] == "alpha, zeta"
    with world["factory"]() as db:
        params = db.scalar(select(ServedCompletion)).params
    assert params["max_tokens"] == 2 and not {"alpha", "zeta"} & set(params)
    plain = {"model": "base", "messages": HELLO, "max_tokens": 2}
    known = httpx.post(world["url"] + "/v1/chat/completions", json=plain, headers=headers)
    assert "x-ignored-fields" not in known.headers
