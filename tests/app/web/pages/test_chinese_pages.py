"""Pages in Chinese: sign-in and one-time links for a Chinese browser, the account, guidelines and
data pages for a Chinese user, the shipped guidelines, and the rating aspects."""

from __future__ import annotations

import pytest

from app.domain import access_links, bootstrap, guidelines
from app.models import Role
from tests.helpers import browser_login, create_task, html

CHINESE_BROWSER = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}


@pytest.fixture
def chinese_admin(client, db, admin):
    admin.locale = "zh"
    db.commit()
    browser_login(client, admin.username)
    return admin


def test_sign_in_speaks_the_browsers_language(client, rater):
    assert html(client.get("/login")).select_one("h1").text == "Sign in"
    notice = client.get("/login?notice=account-created", headers=CHINESE_BROWSER)
    assert html(notice).select_one(".notice").text == "你的账户已创建：请用新密码登录。"
    page = html(client.get("/login", headers=CHINESE_BROWSER))
    assert page.select_one("html")["lang"] == "zh-CN"
    assert page.select_one("h1").text == "登录"
    token = page.select_one("input[name=login_token]")["value"]
    form = {"username": rater.username, "password": "wrong password", "login_token": token}
    refused = client.post("/login", data=form, headers=CHINESE_BROWSER)
    assert refused.status_code == 401
    assert html(refused).select_one(".error").text == "用户名或密码错误"


def test_invitation_and_reset_links_speak_the_browsers_language(client, db, settings, rater):
    invitation = access_links.create_invitation(
        db, role=Role.ADMIN, note="", created_by=None, settings=settings
    )
    reset = access_links.create_password_reset(db, user=rater, created_by=None, settings=settings)
    db.commit()
    invite_page = html(client.get(invitation.path, headers=CHINESE_BROWSER))
    assert invite_page.select_one("h1").text == "创建你的账户"
    assert invite_page.select_one("h1 + p").text.startswith("你受邀成为管理员。")
    reset_page = html(client.get(reset.path, headers=CHINESE_BROWSER))
    assert reset_page.select_one("h1").text == "设置新密码"
    assert reset_page.select_one("strong").text == rater.username
    forged = client.post(reset.path, data={"form_token": "forged"}, headers=CHINESE_BROWSER)
    assert forged.status_code == 403
    assert html(forged).select_one(".error").text.startswith("此表单已过期")


def test_a_dead_link_gives_a_visitor_a_404_page_in_the_browsers_language(client):
    browser = {"Accept": "text/html"}
    chinese = client.get("/no/such/page", headers={**browser, **CHINESE_BROWSER})
    assert chinese.status_code == 404
    page = html(chinese)
    assert page.select_one("html")["lang"] == "zh-CN"
    assert [p.text for p in page.select("main p")] == ["页面不存在", "返回首页"]
    english = html(client.get("/no/such/page", headers=browser))
    assert [p.text for p in english.select("main p")] == ["Not found", "Back to the start page"]


def test_a_used_up_link_says_so_in_the_browsers_language(client):
    headers = {"Accept": "text/html", **CHINESE_BROWSER}
    dead = client.get("/invite/" + "x" * 43, headers=headers)
    assert dead.status_code == 404
    assert html(dead).select_one("main p").text.startswith("此链接无效")


def test_a_chinese_admins_account_guidelines_and_data_pages_are_in_chinese(
    client, db, chinese_admin
):
    task = create_task(db)
    db.commit()
    headings = {
        "/account": "API 密钥",
        "/guidelines": "评分准则",
        "/admin/guidelines": "评分准则",
        "/admin/data": "导入提示",
        "/admin/data/prompts": "提示",
        "/admin/data/tasks": "任务",
        "/admin/data/judgements": "评判",
        f"/admin/data/tasks/{task.id}": f"任务 {task.id}",
    }
    for path, heading in headings.items():
        response = client.get(path)
        assert response.status_code == 200, path
        assert heading in [h1.text.strip() for h1 in html(response).select("h1")], path
    pager = html(client.get("/admin/data/prompts")).select_one(".pager").text
    assert "1 条提示" in pager


def test_the_shipped_guidelines_are_shown_in_the_readers_language_until_an_admin_writes_theirs(
    client, db, rater, chinese_admin
):
    bootstrap.publish_default_guidelines(db)
    db.commit()
    assert html(client.get("/guidelines")).select_one(".markdown h1").text == "如何评分"
    assert html(client.get("/")).select_one(".guidelines-excerpt h1").text == "如何评分"
    editor = html(client.get("/admin/guidelines"))
    assert editor.select_one("textarea").text.startswith("# How to rate")
    shipped_from_a_text_box = editor.select_one("textarea").text.replace("\n", "\r\n")
    guidelines.publish_guidelines(db, body=shipped_from_a_text_box, author=chinese_admin)
    db.commit()
    assert html(client.get("/guidelines")).select_one(".markdown h1").text == "如何评分"
    guidelines.publish_guidelines(db, body="# Be kind", author=chinese_admin)
    db.commit()
    assert html(client.get("/guidelines")).select_one(".markdown h1").text == "Be kind"


def test_an_english_reader_sees_the_shipped_guidelines_in_english(client, db, rater):
    bootstrap.publish_default_guidelines(db)
    db.commit()
    browser_login(client, rater.username)
    assert html(client.get("/guidelines")).select_one(".markdown h1").text == "How to rate"


def test_the_rating_aspects_are_named_in_the_raters_language(client, db, rater):
    rater.locale = "zh"
    create_task(db)
    db.commit()
    browser_login(client, rater.username)
    aspects = html(client.get("/rate")).select("article.response")[0].select(".aspect")
    assert [aspect.text for aspect in aspects] == ["有用性", "无害性", "诚实性"]
