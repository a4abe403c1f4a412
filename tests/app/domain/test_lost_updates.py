"""No lost updates: two admins working from the same state never overwrite each other unseen.

Guidelines carry the version the editor opened; accounts and what is served carry ETags that
writes check in `If-Match`; the check and the write are one serialised transaction, so that of
two concurrent writers based on the same state exactly one wins (on both databases).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from app.db import make_session_factory, session_scope
from app.domain import accounts, guidelines, model_registry
from app.domain.preconditions import PreconditionFailed
from app.models import GuidelineVersion, Role
from tests.helpers import api_key_for, browser_login, html, policy_versions


def test_publishing_guidelines_from_a_stale_version_shows_both_and_overwrites_nothing(
    client, db, admin
):
    guidelines.publish_guidelines(db, body="Be kind.", author=None)
    db.commit()
    csrf = browser_login(client, admin.username)
    opened = html(client.get("/admin/guidelines")).select_one("input[name=based_on]")["value"]
    assert opened == "1"
    # Another admin publishes version 2 while this one edits version 1.
    guidelines.publish_guidelines(db, body="Be kind and exact.", author=None, based_on=1)
    db.commit()

    stale = client.post(
        "/admin/guidelines", data={"body": "Be brief.", "based_on": opened, "csrf_token": csrf}
    )
    assert stale.status_code == 409
    page = html(stale)
    assert "Be kind and exact." in page.select_one("pre.guidelines-published").text
    assert page.select_one("textarea[name=body]").text == "Be brief."
    assert page.select_one("input[name=based_on]")["value"] == "2"
    db.expire_all()
    assert guidelines.current_guidelines(db).body == "Be kind and exact."

    again = client.post(
        "/admin/guidelines",
        data={"body": "Be brief.", "based_on": "2", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert again.status_code == 303
    db.expire_all()
    assert [g.body for g in db.scalars(select(GuidelineVersion).order_by("version"))] == [
        "Be kind.",
        "Be kind and exact.",
        "Be brief.",
    ]


def test_patching_a_user_honours_if_match(client, db, admin, make_user):
    rater = make_user(username="rita", role=Role.RATER)
    db.commit()
    headers = api_key_for(db, admin)
    read = client.get(f"/api/users/{rater.id}", headers=headers)
    assert read.status_code == 200
    tag = read.headers["etag"]

    disabled = client.patch(
        f"/api/users/{rater.id}", json={"is_active": False}, headers={**headers, "If-Match": tag}
    )
    assert disabled.status_code == 200 and disabled.headers["etag"] != tag
    # A second admin who read the account before the change may not overwrite it.
    promoted = client.patch(
        f"/api/users/{rater.id}", json={"role": "admin"}, headers={**headers, "If-Match": tag}
    )
    assert promoted.status_code == 412
    assert "changed since you read it" in promoted.json()["detail"]
    assert promoted.headers["etag"] == disabled.headers["etag"]
    db.expire_all()
    assert accounts.get_user(db, user_id=rater.id).role == Role.RATER
    # Without If-Match the caller asked for no check.
    assert client.patch(f"/api/users/{rater.id}", json={"is_active": True}, headers=headers).json()[
        "is_active"
    ]


def test_promoting_or_rolling_back_from_a_stale_view_is_refused(client, db, admin):
    versions = policy_versions(db, "base", "round-1", "round-2")
    db.commit()
    headers = api_key_for(db, admin)
    tag = client.get("/api/models", headers=headers).headers["etag"]
    first = client.post(
        f"/api/models/{versions['round-1'].id}/promote", headers={**headers, "If-Match": tag}
    )
    assert first.status_code == 200
    second = client.post(
        f"/api/models/{versions['round-2'].id}/promote", headers={**headers, "If-Match": tag}
    )
    assert second.status_code == 412
    stale_rollback = client.post("/api/models/rollback", headers={**headers, "If-Match": tag})
    assert stale_rollback.status_code == 412
    db.expire_all()
    assert model_registry.current_policy(db).name == "round-1"
    fresh = client.post(
        "/api/models/rollback", headers={**headers, "If-Match": first.headers["etag"]}
    )
    assert fresh.status_code == 200 and fresh.json()["name"] == "base"


def test_two_concurrent_promotions_from_one_view_have_one_winner(committed_engine):
    factory = make_session_factory(committed_engine)
    with session_scope(factory) as db:
        made = policy_versions(db, "base", *(f"round-{n}" for n in range(1, 7)))
        ids = [made[f"round-{n}"].id for n in range(1, 7)]
        tag = model_registry.serving_etag(model_registry.current_policy(db))
    barrier = threading.Barrier(len(ids))

    def promote(version_id: int) -> str:
        with factory() as db:
            barrier.wait()
            try:
                model_registry.promote(db, version_id=version_id, if_match=tag)
            except PreconditionFailed:
                return "412"
            db.commit()
            return "200"

    with ThreadPoolExecutor(max_workers=len(ids)) as pool:
        answers = list(pool.map(promote, ids))
    assert sorted(answers) == ["200"] + ["412"] * (len(ids) - 1)
    with factory() as db:
        winner = ids[answers.index("200")]
        assert model_registry.current_policy(db).id == winner


def test_the_promote_button_of_a_stale_page_is_refused(client, db, admin):
    versions = policy_versions(db, "base", "round-1", "round-2")
    db.commit()
    csrf = browser_login(client, admin.username)
    page = html(client.get("/admin/models"))
    button = page.select_one(f"form[action='/admin/models/{versions['round-2'].id}/promote']")
    served_when_read = button.select_one("input[name=serving]")["value"]
    model_registry.promote(db, version_id=versions["round-1"].id)  # another admin, meanwhile
    db.commit()
    stale = client.post(
        f"/admin/models/{versions['round-2'].id}/promote",
        data={"csrf_token": csrf, "serving": served_when_read},
        headers={"accept": "text/html"},
    )
    assert stale.status_code == 412 and "changed since you read it" in stale.text
    db.expire_all()
    assert model_registry.current_policy(db).name == "round-1"
