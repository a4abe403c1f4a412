"""User management: invitations and password resets (one-time links), disabling accounts, admin
API keys for users, and the `/admin/users` page."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.db import make_session_factory, session_scope
from app.domain import access_links
from app.errors import Conflict, NotFound
from app.models import AccessLink, ApiKey, LinkPurpose, Role, User, WebSession, utcnow
from app.schemas import USERNAME_RULE
from app.security import token_digest
from app.web.deps import SESSION_COOKIE
from tests.conftest import make_settings
from tests.helpers import (
    PASSWORD,
    api_key_for,
    bearer,
    browser_login,
    html,
    problem,
    submit_login,
)

NEW_PASSWORD = "a brand new passphrase"
HTML = {"Accept": "text/html"}


@pytest.fixture
def admin_headers(db, admin) -> dict[str, str]:
    return api_key_for(db, admin)


def link_path(client, headers, endpoint: str, body: dict | None = None) -> str:
    """Create a link through the API as an admin; returns its path (`/invite/...`)."""
    response = client.post(endpoint, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return urlsplit(response.json()["url"]).path


def invitation(client, headers, role: str = "rater") -> str:
    return link_path(client, headers, "/api/invitations", {"role": role, "note": "for a test"})


def fill_in(client, path: str, **fields: str):
    """Open a link's form and post it as a browser would (with the form's signed token)."""
    token = html(client.get(path)).select_one("input[name=form_token]")["value"]
    return client.post(path, data={"form_token": token, **fields}, follow_redirects=False)


def accept(client, path: str, username: str, password: str = PASSWORD, **extra: str):
    return fill_in(
        client, path, username=username, password=password, password_again=password, **extra
    )


# --- invitations ---------------------------------------------------------------------------------


def test_an_invitation_creates_an_account_with_its_role_whatever_the_form_says(
    client, admin_headers, db
):
    path = invitation(client, admin_headers, role="rater")
    assert path.startswith("/invite/")
    accepted = accept(client, path, "Newbie", role="admin", is_active="false")
    assert accepted.status_code == 303
    assert accepted.headers["location"] == "/login?notice=account-created"
    newbie = db.scalar(select(User).where(User.username == "newbie"))
    assert newbie.role == Role.RATER and newbie.is_active
    assert submit_login(client, "newbie", PASSWORD).status_code == 303


def test_the_login_page_says_the_new_account_is_ready(client):
    page = html(client.get("/login?notice=account-created"))
    assert "account is ready" in page.select_one(".notice").text
    assert html(client.get("/login?notice=<b>you+were+hacked</b>")).select_one(".notice") is None


def test_an_invitation_works_once(client, admin_headers, db):
    path = invitation(client, admin_headers)
    token = html(client.get(path)).select_one("input[name=form_token]")["value"]
    fields = {"form_token": token, "password": PASSWORD, "password_again": PASSWORD}
    first = client.post(path, data={**fields, "username": "first"}, follow_redirects=False)
    second = client.post(path, data={**fields, "username": "second"}, follow_redirects=False)
    assert (first.status_code, second.status_code) == (303, 404)
    assert db.scalar(select(User).where(User.username == "second")) is None
    assert client.get(path).status_code == 404


def test_concurrent_redemptions_of_one_invitation_create_exactly_one_account(
    committed_engine, tmp_path
):
    factory = make_session_factory(committed_engine)
    with session_scope(factory) as db:
        issued = access_links.create_invitation(
            db, role=Role.RATER, note="", created_by=None, settings=make_settings(tmp_path)
        )
    token = issued.path.removeprefix("/invite/")
    racers = 6
    start = threading.Barrier(racers)

    def redeem(index: int) -> bool:
        start.wait()
        try:
            with session_scope(factory) as db:
                access_links.accept_invitation(
                    db, token=token, username=f"racer{index}", password=PASSWORD
                )
        except NotFound:
            return False
        return True

    with ThreadPoolExecutor(max_workers=racers) as pool:
        outcomes = list(pool.map(redeem, range(racers)))
    assert outcomes.count(True) == 1
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(User)) == 1
        assert db.scalar(select(AccessLink.user_id)) == db.scalar(select(User.id))


def test_unknown_used_revoked_and_expired_links_get_the_same_404_page(client, admin_headers, db):
    used, revoked, expired = (invitation(client, admin_headers) for _ in range(3))
    assert accept(client, used, "taker").status_code == 303
    revoked_id = db.scalar(select(AccessLink.id).where(AccessLink.token_hash == digest(revoked)))
    assert client.delete(f"/api/invitations/{revoked_id}", headers=admin_headers).status_code == 204
    db.scalar(select(AccessLink).where(AccessLink.token_hash == digest(expired))).expires_at = (
        utcnow() - timedelta(seconds=1)
    )
    db.commit()
    unknown = "/invite/" + "x" * 43
    pages = [client.get(path, headers=HTML) for path in (used, revoked, expired, unknown)]
    assert {page.status_code for page in pages} == {404}
    assert len({html(page).select_one("main").text for page in pages}) == 1
    assert "invalid, has expired or was already used" in pages[0].text
    posts = [client.post(path, data={"username": "late"}) for path in (revoked, expired, unknown)]
    assert {post.status_code for post in posts} == {404}


def digest(path: str) -> str:
    return token_digest(path.rsplit("/", 1)[1])


def test_a_taken_username_is_a_form_error_and_leaves_the_link_usable(
    client, admin_headers, make_user
):
    make_user(Role.RATER, "taken")
    path = invitation(client, admin_headers)
    refused = accept(client, path, "Taken")
    assert refused.status_code == 409
    assert "already exists" in html(refused).select_one(".error").text
    assert accept(client, path, "untaken").status_code == 303


def test_a_taken_username_takes_the_claim_back_even_when_the_caller_commits(
    db, make_user, settings
):
    make_user(Role.RATER, "taken")
    issued = access_links.create_invitation(
        db, role=Role.RATER, note="", created_by=None, settings=settings
    )
    token = issued.path.removeprefix("/invite/")
    with pytest.raises(Conflict):
        access_links.accept_invitation(db, token=token, username="taken", password=PASSWORD)
    db.commit()
    assert access_links.usable_link(db, token=token, purpose=LinkPurpose.INVITATION).used_at is None


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({"username": "ok_name", "password": "short", "password_again": "short"}, 422, "password"),
        ({"username": "x", "password": PASSWORD, "password_again": PASSWORD}, 422, "username"),
        ({"username": "ok_name", "password": PASSWORD, "password_again": "other"}, 422, "differ"),
    ],
)
def test_bad_invitation_forms_are_refused_on_the_page(
    client, admin_headers, db, fields, status, message
):
    path = invitation(client, admin_headers)
    refused = fill_in(client, path, **fields)
    assert refused.status_code == status
    assert message in html(refused).select_one(".error").text
    assert client.get(path).status_code == 200  # still usable
    assert db.scalar(select(func.count()).select_from(User)) == 1  # the admin only


def test_an_invitation_form_without_its_signed_token_is_refused(client, admin_headers, db):
    path = invitation(client, admin_headers)
    fields = {"username": "forged", "password": PASSWORD, "password_again": PASSWORD}
    forged = client.post(path, data={**fields, "form_token": "forged"}, follow_redirects=False)
    assert forged.status_code == 403
    assert db.scalar(select(User).where(User.username == "forged")) is None
    # a token signed for the login form does not open the invitation form either
    login_token = html(client.get("/login")).select_one("input[name=login_token]")["value"]
    crossed = client.post(path, data={**fields, "form_token": login_token})
    assert crossed.status_code == 403


def test_invitations_expire_after_the_configured_hours(client, admin_headers, settings):
    response = client.post("/api/invitations", json={"role": "admin"}, headers=admin_headers)
    expires_at = response.json()["expires_at"]
    expected = utcnow() + timedelta(hours=settings.invitation_hours)
    assert abs(expected - datetime.fromisoformat(expires_at)) < timedelta(minutes=1)


def test_listing_invitations_never_shows_a_token_and_only_digests_are_stored(
    client, admin_headers, db
):
    created = client.post(
        "/api/invitations", json={"role": "rater", "note": "Bo"}, headers=admin_headers
    ).json()
    token = created["url"].rsplit("/", 1)[1]
    listed = client.get("/api/invitations", headers=admin_headers)
    assert listed.status_code == 200
    assert [(item["id"], item["note"], item["role"]) for item in listed.json()] == [
        (created["id"], "Bo", "rater")
    ]
    assert token not in listed.text and "token" not in listed.text
    stored = db.get(AccessLink, created["id"])
    assert stored.token_hash == token_digest(token) and token not in repr(vars(stored))


def test_revoked_and_used_invitations_leave_the_pending_list(client, admin_headers):
    kept, used, revoked = (
        client.post("/api/invitations", json={"role": "rater"}, headers=admin_headers).json()
        for _ in range(3)
    )
    accept(client, urlsplit(used["url"]).path, "user_one")
    client.delete(f"/api/invitations/{revoked['id']}", headers=admin_headers)
    listed = client.get("/api/invitations", headers=admin_headers).json()
    assert [item["id"] for item in listed] == [kept["id"]]
    assert client.delete("/api/invitations/999999", headers=admin_headers).status_code == 404


def test_invitation_input_forbids_extra_fields(client, admin_headers):
    body = {"role": "rater", "expires_at": "2999-01-01T00:00:00Z"}
    assert client.post("/api/invitations", json=body, headers=admin_headers).status_code == 422


# --- password resets ------------------------------------------------------------------------------


def test_a_reset_sets_the_password_and_ends_every_session(app, client, rater, admin_headers, db):
    browser_login(client, rater.username)
    assert db.scalar(select(func.count()).where(WebSession.user_id == rater.id)) == 1
    path = link_path(client, admin_headers, f"/api/users/{rater.id}/password-reset")
    with TestClient(app) as holder:
        form = holder.get(path)
        assert rater.username in html(form).select_one("main").text
        done = fill_in(holder, path, password=NEW_PASSWORD, password_again=NEW_PASSWORD)
        assert done.status_code == 303
        assert done.headers["location"] == "/login?notice=password-reset"
        notice = html(holder.get(done.headers["location"])).select_one(".notice").text
        assert "sessions were signed out" in notice
        assert holder.get(path).status_code == 404  # once only
    assert db.scalar(select(func.count()).where(WebSession.user_id == rater.id)) == 0
    assert client.get("/account", follow_redirects=False).status_code == 303  # to /login
    old = {"username": rater.username, "password": PASSWORD}
    assert client.post("/api/auth/token", json=old).status_code == 401
    new = {**old, "password": NEW_PASSWORD}
    assert client.post("/api/auth/token", json=new).status_code == 200


def test_a_reset_revokes_login_tokens_and_keeps_keys_made_on_purpose(
    client, rater, admin_headers, db
):
    login_token, rater_key = bearer(client, rater.username), api_key_for(db, rater)
    path = link_path(client, admin_headers, f"/api/users/{rater.id}/password-reset")
    done = fill_in(client, path, password=NEW_PASSWORD, password_again=NEW_PASSWORD)
    assert done.status_code == 303
    assert client.get("/api/auth/me", headers=login_token).status_code == 401
    assert client.get("/api/auth/me", headers=rater_key).status_code == 200


def test_a_new_reset_link_replaces_the_earlier_one(client, rater, admin_headers):
    endpoint = f"/api/users/{rater.id}/password-reset"
    first, second = (
        link_path(client, admin_headers, endpoint),
        link_path(client, admin_headers, endpoint),
    )
    assert client.get(first).status_code == 404
    assert client.get(second).status_code == 200


def test_a_reset_link_is_no_invitation_and_the_reverse(client, rater, admin_headers):
    reset = link_path(client, admin_headers, f"/api/users/{rater.id}/password-reset")
    invite = invitation(client, admin_headers)
    assert client.get(reset.replace("/reset/", "/invite/")).status_code == 404
    assert client.get(invite.replace("/invite/", "/reset/")).status_code == 404


def test_a_reset_for_an_unknown_user_is_not_found(client, admin_headers):
    response = client.post("/api/users/999999/password-reset", headers=admin_headers)
    assert response.status_code == 404


# --- disabling -----------------------------------------------------------------------------------


def test_a_disabled_user_is_locked_out_at_once_and_enabling_revives_no_old_credential(
    client, rater, admin_headers, db
):
    browser_login(client, rater.username)
    session_token = client.cookies[SESSION_COOKIE]
    rater_key = api_key_for(db, rater)
    login_token = bearer(client, rater.username, PASSWORD)
    for headers in (rater_key, login_token):
        assert client.get("/api/auth/me", headers=headers).status_code == 200

    disabled = client.patch(
        f"/api/users/{rater.id}", json={"is_active": False}, headers=admin_headers
    )
    assert disabled.status_code == 200 and disabled.json()["is_active"] is False
    assert client.get("/account", follow_redirects=False).headers["location"].startswith("/login")
    assert client.get("/api/auth/me", headers=rater_key).status_code == 401
    assert submit_login(client, rater.username, PASSWORD).status_code == 401
    assert (
        db.scalar(select(WebSession).where(WebSession.token_hash == token_digest(session_token)))
        is None
    )

    enabled = client.patch(
        f"/api/users/{rater.id}", json={"is_active": True}, headers=admin_headers
    )
    assert enabled.json()["is_active"] is True
    assert submit_login(client, rater.username, PASSWORD).status_code == 303
    for headers in (rater_key, login_token):  # revoked, not merely paused
        assert client.get("/api/auth/me", headers=headers).status_code == 401
    assert db.scalar(select(func.count()).where(ApiKey.revoked_at.is_(None))) == 1  # admin's


def test_an_admin_cannot_disable_or_demote_themselves(client, admin, admin_headers, db):
    for body in ({"is_active": False}, {"role": "rater"}):
        response = client.patch(f"/api/users/{admin.id}", json=body, headers=admin_headers)
        assert response.status_code == 409
        assert "your own account" in response.json()["detail"]
    db.refresh(admin)
    assert admin.is_active and admin.role == Role.ADMIN


def test_admins_change_roles_but_nothing_else(client, rater, admin_headers, db):
    promoted = client.patch(f"/api/users/{rater.id}", json={"role": "admin"}, headers=admin_headers)
    assert promoted.status_code == 200 and promoted.json()["role"] == "admin"
    extra = {"role": "rater", "username": "renamed"}
    assert (
        client.patch(f"/api/users/{rater.id}", json=extra, headers=admin_headers).status_code == 422
    )
    assert client.patch("/api/users/999999", json={}, headers=admin_headers).status_code == 404
    db.refresh(rater)
    assert (rater.username, rater.role) == ("rita", Role.ADMIN)


# --- API keys of other users ----------------------------------------------------------------------


def test_admins_manage_a_users_api_keys(client, rater, make_user, admin_headers, db):
    created = client.post(
        f"/api/users/{rater.id}/keys",
        json={"name": "export", "scope": "rater"},
        headers=admin_headers,
    )
    assert created.status_code == 201
    key = created.json()["key"]
    as_rater = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/auth/me", headers=as_rater).json()["username"] == rater.username
    listed = client.get(f"/api/users/{rater.id}/keys", headers=admin_headers)
    assert [item["name"] for item in listed.json()] == ["export"]
    assert key not in listed.text and all("key" not in item for item in listed.json())

    other = make_user(Role.RATER, "otto")
    key_id = created.json()["id"]
    wrong_owner = client.delete(f"/api/users/{other.id}/keys/{key_id}", headers=admin_headers)
    assert wrong_owner.status_code == 404
    revoked = client.delete(f"/api/users/{rater.id}/keys/{key_id}", headers=admin_headers)
    assert revoked.status_code == 204
    assert client.get("/api/auth/me", headers=as_rater).status_code == 401
    assert db.scalar(select(ApiKey).where(ApiKey.key_hash == key)) is None


def test_admins_give_a_users_key_no_more_than_the_users_role(client, rater, admin_headers, db):
    response = client.post(
        f"/api/users/{rater.id}/keys", json={"name": "x", "scope": "admin"}, headers=admin_headers
    )
    assert response.status_code == 403
    assert "not 'admin'" in response.json()["detail"]
    default = client.post(f"/api/users/{rater.id}/keys", json={"name": "y"}, headers=admin_headers)
    assert default.json()["scope"] == "inference"
    listed = client.get(f"/api/users/{rater.id}/keys", headers=admin_headers).json()
    assert [(item["name"], item["scope"]) for item in listed] == [("y", "inference")]


def test_the_page_offers_each_account_the_scopes_of_its_role(client, admin, rater):
    browser_login(client, admin.username)
    page = html(client.get("/admin/users"))

    def offered(account) -> list[str]:
        options = page.select(f"#keys-{account.id} select[name=scope] option")
        return [option["value"] for option in options]

    assert offered(rater) == ["inference", "rater"]
    assert offered(admin) == ["inference", "rater", "admin"]


# --- who may -------------------------------------------------------------------------------------

ADMIN_ENDPOINTS = [
    ("GET", "/api/users", None),
    ("POST", "/api/users", {"username": "someone", "password": PASSWORD, "role": "admin"}),
    ("PATCH", "/api/users/{id}", {"role": "admin"}),
    ("POST", "/api/users/{id}/password-reset", None),
    ("GET", "/api/users/{id}/keys", None),
    ("POST", "/api/users/{id}/keys", {"name": "mine"}),
    ("DELETE", "/api/users/{id}/keys/1", None),
    ("GET", "/api/invitations", None),
    ("POST", "/api/invitations", {"role": "admin"}),
    ("DELETE", "/api/invitations/1", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ENDPOINTS)
def test_raters_are_refused_every_user_management_endpoint(client, rater, db, method, path, body):
    url = path.format(id=rater.id)
    response = client.request(method, url, json=body, headers=api_key_for(db, rater))
    assert response.status_code == 403
    db.refresh(rater)
    assert rater.role == Role.RATER
    assert db.scalar(select(func.count()).select_from(AccessLink)) == 0


ADMIN_PAGE_FORMS = [
    ("/admin/users", {"username": "someone", "password": PASSWORD, "role": "admin"}),
    ("/admin/users/{id}/status", {"is_active": "false"}),
    ("/admin/users/{id}/reset-link", {}),
    ("/admin/users/{id}/unlock", {}),
    ("/admin/users/{id}/keys", {"name": "mine"}),
    ("/admin/users/{id}/keys/1/revoke", {}),
    ("/admin/invitations", {"role": "admin"}),
    ("/admin/invitations/1/revoke", {}),
]


def test_raters_are_refused_the_users_page_and_its_forms(client, rater, db):
    csrf = browser_login(client, rater.username)
    assert client.get("/admin/users").status_code == 403
    for path, fields in ADMIN_PAGE_FORMS:
        url = path.format(id=rater.id)
        assert client.post(url, data={**fields, "csrf_token": csrf}).status_code == 403, url
    db.refresh(rater)
    assert rater.is_active and db.scalar(select(func.count()).select_from(AccessLink)) == 0


# --- the page ------------------------------------------------------------------------------------


def test_the_users_page_lists_accounts_with_their_state(client, admin, rater, db):
    rater.paused_at = utcnow()
    db.commit()
    browser_login(client, admin.username)
    page = html(client.get("/admin/users"))
    row = page.select_one(f"#user-{rater.id}")
    cells = [cell.text.strip() for cell in row.select("td")]
    assert cells[:3] == ["rita", "rater", "active"] and cells[3] != "no"
    assert page.select_one(f"#user-{admin.id} form[action$='/status']") is None  # not for oneself
    assert page.select_one("nav.admin-nav a[aria-current=page]")["href"] == "/admin/users"


def test_the_page_creates_disables_and_enables_users(client, admin, db):
    csrf = browser_login(client, admin.username)
    fields = {"username": "Carla", "password": PASSWORD, "role": "rater", "csrf_token": csrf}
    created = client.post("/admin/users", data=fields, follow_redirects=False)
    assert created.status_code == 303 and created.headers["location"] == "/admin/users"
    carla = db.scalar(select(User).where(User.username == "carla"))
    assert carla.role == Role.RATER
    status = f"/admin/users/{carla.id}/status"
    client.post(status, data={"is_active": "false", "csrf_token": csrf})
    db.refresh(carla)
    assert not carla.is_active
    client.post(status, data={"is_active": "true", "csrf_token": csrf})
    db.refresh(carla)
    assert carla.is_active
    mine = client.post(
        f"/admin/users/{admin.id}/status", data={"is_active": "false", "csrf_token": csrf}
    )
    assert mine.status_code == 409
    short = client.post("/admin/users", data={**fields, "username": "dan", "password": "short"})
    assert short.status_code == 422


def test_a_lockout_says_when_to_try_again_and_the_page_unlocks_the_account(
    client, admin, rater, settings
):
    for _ in range(settings.login_max_failures):
        assert submit_login(client, rater.username, "a wrong password").status_code == 401
    locked = submit_login(client, rater.username, PASSWORD)
    assert locked.status_code == 429
    minutes = settings.login_lockout_seconds // 60
    assert html(locked).select_one(".error").text == (
        f"Too many failed logins; try again in {minutes} minutes."
    )
    csrf = browser_login(client, admin.username)
    row = html(client.get("/admin/users")).select_one(f"#user-{rater.id}")
    assert "locked until" in row.text
    unlock = row.select_one("form[action$='/unlock']")["action"]
    answer = client.post(unlock, data={"csrf_token": csrf}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/users"
    row = html(client.get("/admin/users")).select_one(f"#user-{rater.id}")
    assert "locked until" not in row.text and row.select_one("form[action$='/unlock']") is None
    client.cookies.clear()  # as the rater's own browser
    assert submit_login(client, rater.username, PASSWORD).status_code == 303


def test_a_username_that_breaks_the_rule_is_refused_in_words(client, admin_headers):
    body = {"username": "-x", "password": PASSWORD, "role": "rater"}
    assert problem(client.post("/api/users", json=body, headers=admin_headers)) == USERNAME_RULE
    path = invitation(client, admin_headers)
    assert USERNAME_RULE in html(client.get(path)).text  # the form states the rule
    refused = accept(client, path, "a b")
    assert html(refused).select_one(".error").text == f"username: {USERNAME_RULE}"


def test_the_page_shows_an_invitation_link_once_and_revokes_it(client, admin, db):
    csrf = browser_login(client, admin.username)
    created = client.post(
        "/admin/invitations", data={"role": "admin", "note": "Dora", "csrf_token": csrf}
    )
    assert created.status_code == 201
    url = html(created).select_one("#shown-once").text
    assert urlsplit(url).path.startswith("/invite/")
    page = client.get("/admin/users")
    assert url not in page.text and "Dora" in page.text
    link_id = db.scalar(select(AccessLink.id).where(AccessLink.note == "Dora"))
    client.post(f"/admin/invitations/{link_id}/revoke", data={"csrf_token": csrf})
    assert "Dora" not in client.get("/admin/users").text
    assert client.get(urlsplit(url).path).status_code == 404


def test_the_page_shows_a_reset_link_once(client, admin, rater):
    csrf = browser_login(client, admin.username)
    created = client.post(f"/admin/users/{rater.id}/reset-link", data={"csrf_token": csrf})
    assert created.status_code == 201
    notice = html(created).select_one(".notice")
    assert "rita" in notice.text
    url = notice.select_one("#shown-once").text
    assert url not in client.get("/admin/users").text
    assert client.get(urlsplit(url).path).status_code == 200


def test_the_page_creates_and_revokes_a_users_api_key(client, admin, rater, db):
    csrf = browser_login(client, admin.username)
    created = client.post(
        f"/admin/users/{rater.id}/keys",
        data={"name": "laptop", "scope": "rater", "csrf_token": csrf},
    )
    assert created.status_code == 201
    key = html(created).select_one("#shown-once").text
    as_rater = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/auth/me", headers=as_rater).json()["username"] == "rita"
    page = html(client.get("/admin/users"))
    assert key not in page.text
    revoke = page.select_one(f"#keys-{rater.id} form[action$='/revoke']")["action"]
    client.post(revoke, data={"csrf_token": csrf})
    assert client.get("/api/auth/me", headers=as_rater).status_code == 401


def test_a_chinese_admin_is_told_in_chinese_what_the_one_time_secret_is(client, admin, rater, db):
    admin.locale = "zh"
    db.commit()
    csrf = browser_login(client, admin.username)
    created = client.post(f"/admin/users/{rater.id}/reset-link", data={"csrf_token": csrf})
    label = html(created).select_one(".notice p").text
    assert label == "rita 的密码重置链接：请立即复制，它不会再次显示："
