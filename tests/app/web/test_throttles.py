"""Failed-credential throttles: per account from anywhere, per address across usernames, per
address for invalid API keys, and the client address that they count by."""

from __future__ import annotations

from datetime import timedelta
from itertools import cycle

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.cli import uvicorn_options
from app.models import LoginThrottle, utcnow
from app.web import throttles
from app.web.main import create_app
from tests.helpers import PASSWORD, api_key_for, bearer, submit_login
from tests.live_server import serve_in_thread

WRONG = "not the password"


def from_address(app, address: str) -> TestClient:
    """A client whose requests come from `address`, as the connection's peer."""
    return TestClient(app, client=(address, 50000))


def token_status(client, username: str, password: str, headers: dict | None = None) -> int:
    body = {"username": username, "password": password}
    return client.post("/api/auth/token", json=body, headers=headers).status_code


def after_the_window(monkeypatch, settings) -> None:
    """Move the throttles' clock past the window (and the lock) of every counter."""
    later = utcnow() + settings.longest_throttle_window + timedelta(seconds=1)
    monkeypatch.setattr(throttles, "utcnow", lambda: later)


def test_failed_logins_from_many_addresses_lock_the_account_for_the_window(
    app, rater, settings, monkeypatch
):
    # The probe's attack: 30 addresses, each staying under the per-address lockout.
    addresses = cycle([from_address(app, f"198.51.100.{number}") for number in range(30)])
    statuses = [
        token_status(next(addresses), rater.username, WRONG)
        for _ in range(settings.login_account_max_failures)
    ]
    assert statuses == [401] * settings.login_account_max_failures

    fresh = from_address(app, "203.0.113.1")
    refused = fresh.post("/api/auth/token", json={"username": rater.username, "password": PASSWORD})
    assert refused.status_code == 429
    assert 3500 < int(refused.headers["retry-after"]) <= settings.throttle_window_seconds
    assert submit_login(fresh, rater.username, PASSWORD).status_code == 429

    after_the_window(monkeypatch, settings)
    assert token_status(fresh, rater.username, PASSWORD) == 200


def test_an_unknown_account_is_locked_like_a_known_one(app, settings):
    addresses = cycle([from_address(app, f"198.51.100.{number}") for number in range(30)])
    for _ in range(settings.login_account_max_failures):
        token_status(next(addresses), "nobody", WRONG)
    response = from_address(app, "203.0.113.1").post(
        "/api/auth/token", json={"username": "nobody", "password": WRONG}
    )
    assert response.status_code == 429
    assert response.json() == {"detail": f"{throttles.TOO_MANY_LOGINS}; try again in 60 minutes."}


def test_an_address_guessing_across_usernames_is_locked_out(app, rater, settings):
    sprayer = from_address(app, "198.51.100.7")
    statuses = [
        token_status(sprayer, f"user{number}", WRONG)
        for number in range(settings.login_address_max_failures)
    ]
    assert statuses == [401] * settings.login_address_max_failures
    assert token_status(sprayer, rater.username, PASSWORD) == 429
    assert token_status(from_address(app, "198.51.100.8"), rater.username, PASSWORD) == 200


def test_an_address_sending_invalid_keys_is_refused_even_a_valid_one(app, rater, settings, db):
    valid = api_key_for(db, rater)
    guesser = from_address(app, "198.51.100.9")
    statuses = [
        guesser.get(path, headers={"Authorization": f"Bearer al_guess{number}"}).status_code
        for number, path in zip(
            range(settings.api_key_max_failures), cycle(["/api/auth/me", "/v1/models"])
        )
    ]
    assert statuses == [401] * settings.api_key_max_failures
    for path in ("/api/auth/me", "/v1/models"):
        refused = guesser.get(path, headers=valid)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert from_address(app, "198.51.100.10").get("/api/auth/me", headers=valid).status_code == 200


def test_the_lock_per_username_and_address_stays_short(app, rater, settings, monkeypatch):
    client = from_address(app, "198.51.100.11")
    for _ in range(settings.login_max_failures):
        token_status(client, rater.username, WRONG)
    assert token_status(client, rater.username, PASSWORD) == 429
    later = utcnow() + timedelta(seconds=settings.login_lockout_seconds + 1)
    monkeypatch.setattr(throttles, "utcnow", lambda: later)
    assert token_status(client, rater.username, PASSWORD) == 200


def test_signing_in_and_using_keys_writes_no_throttle_row(client, rater, db):
    headers = api_key_for(db, rater)
    for _ in range(3):
        assert client.get("/api/auth/me", headers=headers).status_code == 200
    assert client.get("/api/auth/me", headers=bearer(client, rater.username)).status_code == 200
    assert submit_login(client, rater.username, PASSWORD).status_code == 303
    assert db.scalar(select(func.count()).select_from(LoginThrottle)) == 0


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", True),
        ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
        ("198.51.100.1", "198.51.100.2", False),
    ],
)
def test_ipv6_addresses_count_by_their_64_network(first, second, same):
    assert (throttles.address_group(first) == throttles.address_group(second)) is same


# --- the client address behind a proxy -----------------------------------------------------------


def failures_claiming_other_addresses(server: httpx.Client, username: str, count: int) -> None:
    """`count` failed logins from this machine, each with another forged client address."""
    for number in range(count):
        forged = {"X-Forwarded-For": f"192.0.2.{number + 1}"}
        assert token_status(server, username, WRONG, forged) == 401


def test_a_forged_x_forwarded_for_does_not_change_the_throttled_address(app, rater, settings):
    with (
        serve_in_thread(app, **uvicorn_options(settings)) as url,
        httpx.Client(base_url=url) as server,
    ):
        failures_claiming_other_addresses(server, rater.username, settings.login_max_failures)
        forged = {"X-Forwarded-For": "192.0.2.200"}
        assert token_status(server, rater.username, PASSWORD, forged) == 429  # all from 127.0.0.1


def test_a_trusted_proxy_names_the_client(engine, session_factory, rater, settings):
    proxied = settings.model_copy(update={"trusted_proxies": "127.0.0.1"})
    app = create_app(proxied, engine=engine)
    app.state.session_factory = session_factory
    with (
        serve_in_thread(app, **uvicorn_options(proxied)) as url,
        httpx.Client(base_url=url) as server,
    ):
        failures_claiming_other_addresses(server, rater.username, proxied.login_max_failures)
        another_client = {"X-Forwarded-For": "192.0.2.200"}
        assert token_status(server, rater.username, PASSWORD, another_client) == 200
        for _ in range(proxied.login_max_failures):
            token_status(server, rater.username, WRONG, another_client)
        assert token_status(server, rater.username, PASSWORD, another_client) == 429


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(1, "in 1 second"), (59, "in 59 seconds"), (60, "in 1 minute"), (61, "in 2 minutes")],
)
def test_a_wait_is_said_in_seconds_or_whole_minutes(seconds, words):
    assert throttles.in_words(seconds) == words
