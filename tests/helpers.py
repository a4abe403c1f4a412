"""Test helpers that act like a browser or a script: forms, logins, API keys."""

from __future__ import annotations

from bs4 import BeautifulSoup
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app import crud
from app.models import User

TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"
PASSWORD = "correct horse battery staple"


def html(response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


def submit_login(client: TestClient, username: str, password: str, next_path: str = "/"):
    """Fill in and post the login form as a browser would; returns the POST's response."""
    form = html(client.get("/login"))
    token = form.select_one("input[name=login_token]")["value"]
    return client.post(
        "/login",
        data={"username": username, "password": password, "login_token": token, "next": next_path},
        follow_redirects=False,
    )


def browser_login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Sign in through the form; returns the session's CSRF token as the pages carry it."""
    response = submit_login(client, username, password)
    assert response.status_code == 303, response.text
    page = html(client.get("/account"))
    return page.select_one("input[name=csrf_token]")["value"]


def api_key_for(db: Session, user: User) -> dict[str, str]:
    _, key = crud.create_api_key(db, user=user, name="test")
    db.commit()
    return {"Authorization": f"Bearer {key}"}
