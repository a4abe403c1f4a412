"""Signing in and out: login form, sessions, throttling, tokens and API keys."""

from __future__ import annotations

from sqlalchemy import func, select

from app.domain import accounts
from app.models import ApiKey, KeyScope, Role, User, WebSession
from app.web.deps import SESSION_COOKIE
from tests.helpers import (
    PASSWORD,
    api_key_for,
    bearer,
    browser_login,
    cookie_domain,
    html,
    submit_login,
)


def test_login_page_renders_a_form_with_a_signed_token(client):
    response = client.get("/login")
    assert response.status_code == 200
    form = html(response).select_one("form[action='/login'][method=post]")
    assert form.select_one("input[name=username]") is not None
    assert form.select_one("input[name=password][type=password]") is not None
    assert form.select_one("input[name=login_token]")["value"]


def test_login_sets_a_strict_session_cookie_and_redirects(client, rater):
    response = submit_login(client, rater.username, PASSWORD, next_path="/account")
    assert response.status_code == 303
    assert response.headers["location"] == "/account"
    cookie = next(
        header
        for header in response.headers.get_list("set-cookie")
        if header.startswith(SESSION_COOKIE)
    )
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert client.get("/").status_code == 200


def test_login_ignores_a_next_target_on_another_site(client, rater):
    response = submit_login(client, rater.username, PASSWORD, next_path="//evil.example/")
    assert response.headers["location"] == "/"


def test_wrong_password_and_unknown_user_get_the_same_answer(client, rater):
    wrong_password = client.post(
        "/api/auth/token", json={"username": rater.username, "password": "not the password"}
    )
    unknown_user = client.post(
        "/api/auth/token", json={"username": "nobody", "password": "not the password"}
    )
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert (
        wrong_password.json() == unknown_user.json() == {"detail": "Incorrect username or password"}
    )


def test_login_form_failure_says_the_same_for_unknown_user_and_wrong_password(client, rater):
    wrong_password = submit_login(client, rater.username, "not the password")
    unknown_user = submit_login(client, "nobody", "not the password")
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert (
        html(wrong_password).select_one(".error").text
        == html(unknown_user).select_one(".error").text
    )


def test_login_without_the_form_token_is_refused(client, rater):
    response = client.post(
        "/login", data={"username": rater.username, "password": PASSWORD}, follow_redirects=False
    )
    assert response.status_code == 403
    assert SESSION_COOKIE not in response.cookies


def test_repeated_failures_are_throttled_with_retry_after(client, rater, settings):
    body = {"username": rater.username, "password": "wrong guess"}
    statuses = [
        client.post("/api/auth/token", json=body).status_code
        for _ in range(settings.login_max_failures)
    ]
    assert statuses == [401] * settings.login_max_failures
    blocked = client.post("/api/auth/token", json={**body, "password": PASSWORD})
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    assert submit_login(client, rater.username, PASSWORD).status_code == 429


def test_successful_login_resets_the_failure_count(client, rater, settings):
    body = {"username": rater.username, "password": "wrong guess"}
    for _ in range(settings.login_max_failures - 1):
        client.post("/api/auth/token", json=body)
    assert client.post("/api/auth/token", json={**body, "password": PASSWORD}).status_code == 200
    for _ in range(settings.login_max_failures - 1):
        client.post("/api/auth/token", json=body)
    assert client.post("/api/auth/token", json={**body, "password": PASSWORD}).status_code == 200


def test_login_rotates_the_session(client, rater, db):
    browser_login(client, rater.username)
    first_token = client.cookies[SESSION_COOKIE]
    # The browser still holds the old cookie (or one planted by someone else) and signs in.
    domain = cookie_domain(client)
    del client.cookies[SESSION_COOKIE]
    form = html(client.get("/login"))
    client.cookies.set(SESSION_COOKIE, first_token, domain=domain)
    client.post(
        "/login",
        data={
            "username": rater.username,
            "password": PASSWORD,
            "login_token": form.select_one("input[name=login_token]")["value"],
        },
    )
    second_token = client.cookies[SESSION_COOKIE]
    assert first_token != second_token
    assert accounts.get_web_session(db, token=first_token) is None
    assert accounts.get_web_session(db, token=second_token) is not None


def test_logout_invalidates_the_session_server_side(client, rater, db):
    csrf = browser_login(client, rater.username)
    token, domain = client.cookies[SESSION_COOKIE], cookie_domain(client)
    response = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303
    assert accounts.get_web_session(db, token=token) is None
    client.cookies.set(SESSION_COOKIE, token, domain=domain)  # a stolen copy is now worthless
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")


def test_sessions_are_stored_only_as_digests(client, rater, db):
    browser_login(client, rater.username)
    token = client.cookies[SESSION_COOKIE]
    stored = db.scalars(select(WebSession.token_hash)).all()
    assert token not in stored and len(stored) == 1


def test_pages_send_anonymous_visitors_to_the_login_form(client):
    response = client.get("/account", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/account"


def test_inactive_users_cannot_sign_in(client, rater, db):
    rater.is_active = False
    db.commit()
    response = client.post(
        "/api/auth/token", json={"username": rater.username, "password": PASSWORD}
    )
    assert response.status_code == 401


def test_token_endpoint_returns_a_bearer_token_that_works(client, rater):
    response = client.post(
        "/api/auth/token", json={"username": rater.username.upper(), "password": PASSWORD}
    )
    assert response.status_code == 200
    token = response.json()
    assert token["token_type"] == "bearer"
    me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert me.json()["username"] == rater.username


def test_no_response_reveals_the_password_hash(client, rater, admin, db):
    headers = api_key_for(db, admin)
    for path in ("/api/auth/me", "/api/users"):
        body = client.get(path, headers=headers).text
        assert "argon2" not in body and "password" not in body


def test_api_keys_are_stored_hashed_and_revocable_at_once(client, rater, db):
    body = {"name": "script", "scope": "rater"}
    created = client.post("/api/keys", json=body, headers=api_key_for(db, rater))
    assert created.status_code == 201
    key = created.json()["key"]
    assert db.scalar(select(ApiKey).where(ApiKey.key_hash == key)) is None
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/auth/me", headers=headers).status_code == 200
    assert client.delete(f"/api/keys/{created.json()['id']}", headers=headers).status_code == 204
    assert client.get("/api/auth/me", headers=headers).status_code == 401


def test_key_listing_never_shows_the_key(client, rater, db):
    headers = api_key_for(db, rater)
    listed = client.get("/api/keys", headers=headers).json()
    assert listed and all("key" not in item for item in listed)
    assert headers["Authorization"].removeprefix("Bearer ") not in str(listed)


def test_another_users_key_id_is_not_found(client, rater, make_user, db):
    other = make_user(Role.RATER, "otto")
    other_key, _ = accounts.create_api_key(db, user=other, name="theirs", scope=KeyScope.RATER)
    db.commit()
    response = client.delete(f"/api/keys/{other_key.id}", headers=api_key_for(db, rater))
    missing = client.delete("/api/keys/999999", headers=api_key_for(db, rater))
    assert response.status_code == missing.status_code == 404
    assert response.json() == missing.json()
    assert db.get(ApiKey, other_key.id).revoked_at is None


def test_a_raters_key_on_an_admin_route_is_forbidden(client, rater, db):
    response = client.get("/api/users", headers=api_key_for(db, rater))
    assert response.status_code == 403
    assert response.json() == {"detail": "Your role does not allow this."}


def test_admins_create_users_and_cannot_set_extra_fields(client, admin, db):
    headers = api_key_for(db, admin)
    response = client.post(
        "/api/users",
        json={"username": "Newbie", "password": PASSWORD, "role": "rater", "is_active": False},
        headers=headers,
    )
    assert response.status_code == 422
    created = client.post(
        "/api/users",
        json={"username": "Newbie", "password": PASSWORD, "role": "rater"},
        headers=headers,
    )
    assert created.status_code == 201
    assert created.json()["username"] == "newbie"
    duplicate = client.post(
        "/api/users",
        json={"username": "newbie", "password": PASSWORD, "role": "admin"},
        headers=headers,
    )
    assert duplicate.status_code == 409
    assert db.scalar(select(User).where(User.username == "newbie")).role == Role.RATER


def test_account_page_shows_a_new_key_once(client, rater):
    csrf = browser_login(client, rater.username)
    created = client.post(
        "/account/keys", data={"name": "laptop", "scope": "rater", "csrf_token": csrf}
    )
    assert created.status_code == 201
    key = html(created).select_one("#new-key").text
    assert key.startswith("al_")
    assert key not in client.get("/account").text
    assert client.get("/api/auth/me", headers={"Authorization": f"Bearer {key}"}).status_code == 200


# --- login tokens --------------------------------------------------------------------------------


def test_login_tokens_are_listed_and_revoked_by_their_owner(client, rater):
    first, second = bearer(client, rater.username), bearer(client, rater.username)
    listed = client.get("/api/auth/tokens", headers=first)
    assert listed.status_code == 200
    assert [(item["name"], item["scope"]) for item in listed.json()] == [
        ("login token", "rater")
    ] * 2
    for headers in (first, second):
        assert headers["Authorization"].removeprefix("Bearer ") not in listed.text
    newest = listed.json()[0]["id"]

    assert client.delete(f"/api/auth/tokens/{newest}", headers=first).status_code == 204
    assert client.get("/api/auth/me", headers=second).status_code == 401
    assert client.get("/api/auth/me", headers=first).status_code == 200
    assert len(client.get("/api/auth/tokens", headers=first).json()) == 1


def test_another_users_login_token_and_a_key_are_not_login_tokens_to_revoke(
    client, rater, make_user, db
):
    other = make_user(Role.RATER, "otto")
    bearer(client, other.username)
    their_token = db.scalar(select(ApiKey).where(ApiKey.user_id == other.id))
    mine = api_key_for(db, rater)
    my_key = db.scalar(select(ApiKey).where(ApiKey.user_id == rater.id))
    answers = [
        client.delete(f"/api/auth/tokens/{token_id}", headers=mine)
        for token_id in (their_token.id, my_key.id, 999999)
    ]
    assert {response.status_code for response in answers} == {404}
    assert len({response.text for response in answers}) == 1
    db.expire_all()
    assert their_token.revoked_at is None and my_key.revoked_at is None


def test_the_account_page_lists_login_tokens_with_a_revoke_form(client, rater):
    token = bearer(client, rater.username)
    csrf = browser_login(client, rater.username)
    page = html(client.get("/account"))
    row = page.select_one("#login-tokens table.keys tbody tr")
    assert row.select_one("td.scope").text == "rater"
    assert token["Authorization"].removeprefix("Bearer ") not in page.text
    form = row.select_one("form[method=post]")
    assert form.select_one("input[name=csrf_token]")["value"] == csrf
    assert client.post(form["action"], data={}).status_code == 403  # no CSRF token
    client.post(form["action"], data={"csrf_token": csrf})
    assert client.get("/api/auth/me", headers=token).status_code == 401
    assert html(client.get("/account")).select_one("#login-tokens table") is None


# --- scopes --------------------------------------------------------------------------------------


def test_a_new_key_has_the_inference_scope_unless_asked_and_listings_show_it(client, rater, db):
    headers = api_key_for(db, rater)
    created = client.post("/api/keys", json={"name": "sdk"}, headers=headers)
    assert created.status_code == 201 and created.json()["scope"] == "inference"
    asked = client.post(
        "/api/keys", json={"name": "rating script", "scope": "rater"}, headers=headers
    )
    assert asked.json()["scope"] == "rater"
    listed = client.get("/api/keys", headers=headers).json()
    assert {item["name"]: item["scope"] for item in listed} == {
        "sdk": "inference",
        "rating script": "rater",
        "test": "rater",
    }


def test_an_inference_key_serves_v1_only(client, rater, db):
    headers = api_key_for(db, rater, KeyScope.INFERENCE)
    assert client.get("/v1/models", headers=headers).status_code == 200
    for path in ("/api/auth/me", "/api/tasks/next", "/api/keys", "/account"):
        response = client.get(path, headers=headers)
        assert response.status_code == 403, path
        assert "'inference' scope, which serves /v1 only" in response.text


def test_an_admins_rater_key_cannot_use_admin_routes(client, admin, db):
    headers = api_key_for(db, admin, KeyScope.RATER)
    assert client.get("/api/auth/me", headers=headers).status_code == 200
    response = client.get("/api/users", headers=headers)
    assert response.status_code == 403
    assert response.json() == {
        "detail": "This API key has the 'rater' scope, which does not allow this; "
        "it needs a key with the 'admin' scope."
    }
    assert client.get("/api/users", headers=api_key_for(db, admin)).status_code == 200


def test_a_key_of_a_demoted_admin_loses_the_admin_power(client, make_user, db):
    other_admin = make_user(Role.ADMIN, "bea")
    headers = api_key_for(db, other_admin, KeyScope.ADMIN)
    other_admin.role = Role.RATER
    db.commit()
    assert client.get("/api/users", headers=headers).json() == {
        "detail": "Your role does not allow this."
    }


def test_nobody_creates_a_key_with_more_power_than_their_role_or_their_key(
    client, rater, admin, db
):
    too_much = {"name": "mine", "scope": "admin"}
    for headers in (api_key_for(db, rater), api_key_for(db, admin, KeyScope.RATER)):
        response = client.post("/api/keys", json=too_much, headers=headers)
        assert response.status_code == 403
        assert "scope 'inference' or 'rater', not 'admin'" in response.json()["detail"]
    created = client.post("/api/keys", json=too_much, headers=api_key_for(db, admin))
    assert created.status_code == 201
    assert (
        client.post(
            "/api/keys", json={"name": "x", "scope": "owner"}, headers=api_key_for(db, admin)
        ).status_code
        == 422
    )
    assert (
        db.scalar(
            select(func.count()).where(ApiKey.scope == KeyScope.ADMIN, ApiKey.user_id == rater.id)
        )
        == 0
    )


def test_a_login_token_has_the_users_role_or_the_scope_asked_for(client, rater):
    default = client.post(
        "/api/auth/token", json={"username": rater.username, "password": PASSWORD}
    )
    assert default.json()["scope"] == "rater"
    narrow = bearer(client, rater.username, scope="inference")
    assert client.get("/api/auth/me", headers=narrow).status_code == 403
    too_much = {"username": rater.username, "password": PASSWORD, "scope": "admin"}
    response = client.post("/api/auth/token", json=too_much)
    assert response.status_code == 403 and "not 'admin'" in response.json()["detail"]


def test_the_account_page_offers_the_scopes_of_the_users_role(client, rater):
    csrf = browser_login(client, rater.username)
    page = html(client.get("/account"))
    options = page.select("form[action='/account/keys'] select[name=scope] option")
    assert [option["value"] for option in options] == ["inference", "rater"]
    refused = client.post("/account/keys", data={"name": "x", "scope": "admin", "csrf_token": csrf})
    assert refused.status_code == 403


def test_the_changed_routes_document_their_errors(app):
    paths = app.openapi()["paths"]
    token = paths["/api/auth/token"]["post"]["responses"]
    assert {"401", "403", "422", "429"} <= set(token)
    assert "Retry-After" in token["429"]["headers"]
    assert "403" in paths["/api/keys"]["post"]["responses"]
    assert "404" in paths["/api/auth/tokens/{token_id}"]["delete"]["responses"]
    assert "403" in paths["/api/users/{user_id}/keys"]["post"]["responses"]
