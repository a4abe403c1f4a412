"""Input the database cannot hold: integers past 64 bits and NUL characters are refused (422, or
400 on `/v1`) on both databases, never a 500; model output with NUL is stored without it."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import select

from app.domain import model_registry
from app.models import ModelKind, Response, ServedCompletion
from app.schemas import INT64_MAX
from tests.helpers import api_key_for, browser_login, create_task, problem

HUGE = 2**70


def integer_schemas(schema: dict, components: dict, where: str, seen: frozenset = frozenset()):
    """(where, schema) for every integer reachable from `schema`."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name not in seen:
            yield from integer_schemas(
                components[name], components, f"{where}>{name}", seen | {name}
            )
        return
    if schema.get("type") == "integer":
        yield where, schema
    for key in ("anyOf", "oneOf", "allOf"):
        for part in schema.get(key, []):
            yield from integer_schemas(part, components, where, seen)
    for name, part in schema.get("properties", {}).items():
        yield from integer_schemas(part, components, f"{where}.{name}", seen)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from integer_schemas(schema[key], components, f"{where}[]", seen)


def test_every_integer_a_client_sends_is_bounded_to_64_bits(app):
    spec = app.openapi()
    components = spec["components"]["schemas"]
    unbounded = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            inputs = [
                (f"{parameter['in']} {parameter['name']}", parameter["schema"])
                for parameter in operation.get("parameters", [])
            ] + [
                ("body", content["schema"])
                for content in operation.get("requestBody", {}).get("content", {}).values()
            ]
            for name, schema in inputs:
                for where, integer in integer_schemas(schema, components, name):
                    # (body schemas of forms carry their bounds as floats, hence the floats)
                    if not (
                        float(integer.get("maximum", math.inf)) <= float(INT64_MAX)
                        and float(integer.get("minimum", -math.inf)) >= -float(INT64_MAX)
                    ):
                        unbounded.append(f"{method.upper()} {path}: {where}")
    assert unbounded == []


def test_integers_past_64_bits_are_422_in_paths_queries_and_bodies(client, db, admin):
    headers = api_key_for(db, admin)
    requests = [
        ("get", f"/api/rounds/{HUGE}", None),
        ("get", f"/api/rounds/{HUGE}/metrics", None),
        ("get", f"/api/rounds/1/log?after={HUGE}", None),
        ("post", f"/api/rounds/{HUGE}/cancel", None),
        ("get", f"/api/jobs/{HUGE}", None),
        ("post", f"/api/models/{HUGE}/promote", None),
        ("get", f"/api/export/preferences?format=trl&round={HUGE}", None),
        ("patch", f"/api/users/{HUGE}", {"role": "rater"}),
        ("delete", f"/api/keys/{HUGE}", None),
        ("post", f"/api/tasks/{HUGE}/skip", {}),
        ("post", "/api/generations", {"prompt_ids": [HUGE]}),
        ("post", "/api/generations", {"seed": HUGE}),
        ("post", "/api/tasks/1/judgement", {"ranking": [HUGE, 1]}),
        ("post", "/api/tasks/1/judgement", {"ranking": [1, 2], "guideline_version": HUGE}),
        ("post", "/api/rounds", {"overrides": {"policy": {"steps": HUGE}}}),
        ("get", f"/admin/rounds?before={HUGE}", None),
    ]
    for method, url, body in requests:
        response = client.request(method, url, json=body, headers=headers)
        assert response.status_code == 422, (method, url, body, response.status_code)


def test_nul_characters_are_refused_wherever_text_comes_in(client, db, admin):
    headers = api_key_for(db, admin)
    task = create_task(db)
    db.commit()
    first = task.responses[0].response_id
    requests = [
        ("/api/auth/token", {"username": "ada\x00", "password": "x"}, {}),
        ("/api/keys", {"name": "laptop\x00"}, headers),
        ("/api/rounds", {"line": "main\x00"}, headers),
        ("/api/invitations", {"role": "rater", "note": "for\x00you"}, headers),
        (
            f"/api/tasks/{task.id}/judgement",
            {"ranking": [first], "critique": "bad\x00"},
            headers,
        ),
    ]
    for url, body, auth in requests:
        response = client.post(url, json=body, headers=auth)
        assert response.status_code == 422, (url, response.text)
        assert "NUL" in problem(response)
    search = client.get("/admin/data/prompts?q=a%00b", headers=headers)
    assert search.status_code == 422
    chat = client.post(
        "/v1/chat/completions",
        json={"model": "current", "messages": [{"role": "user", "content": "hi\x00"}]},
        headers=headers,
    )
    assert chat.status_code == 400 and "NUL" in chat.json()["error"]["message"]


def test_a_nul_in_a_browser_form_is_refused_and_an_escaped_backslash_is_not_a_nul(
    client, db, admin
):
    csrf = browser_login(client, "ada")
    refused = client.post("/admin/guidelines", data={"csrf_token": csrf, "body": "Be kind\x00"})
    assert refused.status_code == 422
    headers = {**api_key_for(db, admin), "Content-Type": "application/json"}
    literal = client.post("/api/keys", content='{"name": "a\\\\u0000 b"}', headers=headers)
    assert literal.status_code == 201 and literal.json()["name"] == "a\\u0000 b"


@pytest.mark.parametrize("text", ["an answer\x00 with a NUL", "\x00"])
def test_model_output_with_nul_is_stored_without_it(db, text):
    task = create_task(db, texts=[text, "plain"])
    db.commit()
    stored = db.scalars(select(Response.text).where(Response.prompt_id == task.prompt_id)).all()
    assert "\x00" not in "".join(stored) and text.replace("\x00", "") in stored
    completion = ServedCompletion(
        public_id=f"chatcmpl-{task.id}",
        model_version_id=_a_version(db),
        messages=[],
        choices=[{"text": text, "finish_reason": "stop"}],
        prompt_tokens=1,
        completion_tokens=1,
    )
    db.add(completion)
    db.commit()
    assert completion.choices[0]["text"] == text.replace("\x00", "")


def _a_version(db) -> int:
    version = model_registry.register_model_version(
        db, name="nul-test", kind=ModelKind.POLICY, path="/nowhere", config={}
    )
    return version.id
