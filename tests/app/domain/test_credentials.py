"""Credentials remembered for a few seconds: no query per request, and revocations that still
apply (at once through this process, within the window from anywhere else)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from app.domain.credentials import REMEMBERED, Credential, RememberedCredentials
from app.models import ApiKey, Role, User, utcnow
from app.web.deps import SESSION_COOKIE
from tests.helpers import api_key_for, browser_login, cookie_domain, create_task, statements_on


@pytest.fixture
def headers(db, rater):
    headers = api_key_for(db, rater)
    db.commit()
    return headers


def test_a_remembered_key_authenticates_without_a_query(client, connection, headers):
    assert client.get("/api/tasks/next", headers=headers).status_code == 204  # verified
    with statements_on(connection) as sent:
        assert client.get("/api/tasks/next", headers=headers).status_code == 204
    assert sent and not [sql for sql in sent if "api_keys" in sql or "login_throttles" in sql]


def test_a_key_revoked_through_this_process_is_refused_at_once(client, headers):
    assert client.get("/api/tasks/next", headers=headers).status_code == 204
    [key_id] = [key["id"] for key in client.get("/api/keys", headers=headers).json()]
    assert client.delete(f"/api/keys/{key_id}", headers=headers).status_code == 204
    assert client.get("/api/tasks/next", headers=headers).status_code == 401


def test_a_key_revoked_elsewhere_is_refused_once_the_window_ends(client, db, headers, monkeypatch):
    assert client.get("/api/tasks/next", headers=headers).status_code == 204
    # as another process (the CLI) would: nothing tells this one
    db.execute(update(ApiKey).values(revoked_at=utcnow()))
    db.commit()
    assert client.get("/api/tasks/next", headers=headers).status_code == 204  # remembered
    later = REMEMBERED._clock() + REMEMBERED.seconds + 1
    monkeypatch.setattr(REMEMBERED, "_clock", lambda: later)
    assert client.get("/api/tasks/next", headers=headers).status_code == 401


def test_a_disabled_rater_is_refused_at_once_and_a_pause_applies_to_the_next_task(
    client, db, headers, admin, rater
):
    create_task(db)
    db.commit()
    assert client.get("/api/tasks/next", headers=headers).status_code == 200
    db.execute(update(User).where(User.id == rater.id).values(paused_at=utcnow()))
    db.commit()
    assert client.get("/api/tasks/next", headers=headers).status_code == 403  # read per lease
    admin_headers = api_key_for(db, admin)
    db.commit()
    disabled = client.patch(
        f"/api/users/{rater.id}", json={"is_active": False}, headers=admin_headers
    )
    assert disabled.status_code == 200
    assert client.get("/api/tasks/next", headers=headers).status_code == 401


def test_a_signed_out_session_is_refused_at_once_by_the_rater_api(client, rater):
    csrf = browser_login(client, rater.username)
    token, domain = client.cookies[SESSION_COOKIE], cookie_domain(client)
    assert client.get("/api/tasks/next").status_code == 204  # remembered now
    assert client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False).is_redirect
    client.cookies.set(SESSION_COOKIE, token, domain=domain)  # a stolen copy
    assert client.get("/api/tasks/next").status_code == 401


def test_remembered_credentials_end_with_their_window_their_own_expiry_or_their_address():
    now = [100.0]
    memory = RememberedCredentials(seconds=5, capacity=3, clock=lambda: now[0])
    key = Credential(user_id=1, user_role=Role.RATER, via="api_key", api_key_id=1)
    memory.remember("digest", "10.0.0.1", key)
    assert memory.recall("digest", "10.0.0.1") == key
    assert memory.recall("digest", "10.0.0.2") is None  # another address checks its lock first
    now[0] += 6
    assert memory.recall("digest", "10.0.0.1") is None
    ended = Credential(1, Role.RATER, "session", expires_at=utcnow() - timedelta(seconds=1))
    memory.remember("cookie", "", ended)
    assert memory.recall("cookie", "") is None
    memory.remember("digest", "10.0.0.1", key)
    memory.forget_address("10.0.0.1")
    assert memory.recall("digest", "10.0.0.1") is None
    for number in range(4):  # past its capacity it starts over rather than grow
        memory.remember(f"d{number}", "", key)
    assert len(memory._entries) <= 3
