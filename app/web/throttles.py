"""Failed-credential throttles: the counters behind the 429s for password guessing and for
invalid API keys.

Each counter is one row of `login_throttles`, so every web process shares it. A failed login
moves three counters: the username from this address (a short lockout, forgiven by a success),
the account from any address (so that many addresses together get no more than
`login_account_max_failures` guesses an hour: AUTH-03), and the address across usernames
(password spraying). An invalid bearer key moves one: its address. A counter that reaches its
limit refuses every attempt, the right password or a valid key included, until its lock ends one
window after the failure that tripped it; so no window ever holds more failures than the limit.
Checking only reads: a successful attempt writes nothing here beyond forgiving its own
username-and-address counter.

The address is the client's as the server sees it: the TCP peer, or what a trusted proxy says
(`ALIGNLOOP_TRUSTED_PROXIES`). IPv6 addresses count by their /64 network, which one subscriber
usually holds whole (counting single addresses would give them billions of fresh starts).
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Insert, case, delete, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.config import Settings
from app.errors import RateLimited
from app.models import LoginThrottle, UTCDateTime, utcnow

TOO_MANY_LOGINS = "Too many failed logins"
TOO_MANY_INVALID_KEYS = "Too many invalid API keys from this address"
"""The start of a refusal; `ensure_allowed` adds when to try again."""
IPV6_GROUP_PREFIX = 64
_LOGIN, _ACCOUNT = "login|", "account|"
"""Key prefixes of the counters of a username from one address and of an account."""


@dataclass(frozen=True)
class Counter:
    """One throttle: failures under `key`, locked for `window` once `max_failures` of them fall
    within `window`."""

    key: str
    max_failures: int
    window: timedelta


def login_counters(settings: Settings, *, username: str, address: str) -> list[Counter]:
    """The counters a failed login moves; a successful one forgives the first."""
    name, group = _name(username), address_group(address)
    window = timedelta(seconds=settings.throttle_window_seconds)
    return [
        Counter(
            f"{_LOGIN}{name}|{group}",
            settings.login_max_failures,
            timedelta(seconds=settings.login_lockout_seconds),
        ),
        Counter(f"{_ACCOUNT}{name}", settings.login_account_max_failures, window),
        Counter(f"login-address|{group}", settings.login_address_max_failures, window),
    ]


def api_key_counters(settings: Settings, *, address: str) -> list[Counter]:
    """The counter an invalid bearer key moves."""
    window = timedelta(seconds=settings.throttle_window_seconds)
    return [Counter(f"api-key|{address_group(address)}", settings.api_key_max_failures, window)]


def address_group(address: str) -> str:
    """What an address is counted as: itself, or for IPv6 its /64 network."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:100]  # not an IP address (a Unix socket, a test client): as it is
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/{IPV6_GROUP_PREFIX}", strict=False))
    return str(ip)


def ensure_allowed(db: Session, counters: list[Counter], *, message: str) -> None:
    """Raise `RateLimited` if any counter is locked, saying when the last lock ends (in words
    and in `Retry-After`): a person locked out should not have to guess how long to wait."""
    now = utcnow()
    locks = db.scalars(
        select(LoginThrottle.locked_until).where(
            LoginThrottle.key.in_([counter.key for counter in counters]),
            LoginThrottle.locked_until > now,
        )
    ).all()
    if locks:
        wait_s = math.ceil((max(locks) - now).total_seconds())
        raise RateLimited(f"{message}; try again {in_words(wait_s)}.", wait_s)


def in_words(seconds: int) -> str:
    """A wait as a person reads it: "in 40 seconds", "in 1 minute", "in 15 minutes"."""
    if seconds < 60:
        return f"in {seconds} second{'' if seconds == 1 else 's'}"
    minutes = math.ceil(seconds / 60)
    return f"in {minutes} minute{'' if minutes == 1 else 's'}"


def unlock_account(db: Session, *, username: str) -> int:
    """Lift the lockouts of an account (an admin's decision): its own counter and those of its
    username from every address. Counters of addresses across usernames stay, since they
    throttle a guesser rather than protect an account. Returns how many counters ended."""
    name = _name(username)
    return db.execute(
        delete(LoginThrottle).where(
            (LoginThrottle.key == f"{_ACCOUNT}{name}")
            | LoginThrottle.key.startswith(f"{_LOGIN}{name}|", autoescape=True)
        )
    ).rowcount


def account_locks(db: Session) -> dict[str, datetime]:
    """The accounts locked now, by username: when each lock ends (the latest of its counters)."""
    now = utcnow()
    locks: dict[str, datetime] = {}
    rows = db.execute(
        select(LoginThrottle.key, LoginThrottle.locked_until).where(
            LoginThrottle.locked_until > now,
            LoginThrottle.key.startswith(_ACCOUNT) | LoginThrottle.key.startswith(_LOGIN),
        )
    )
    for key, until in rows:
        if key.startswith(_LOGIN):
            key = key.rsplit("|", 1)[0]  # less the address
        name = key.split("|", 1)[1]
        locks[name] = max(until, locks.get(name, until))
    return locks


def _name(username: str) -> str:
    """A username as its counters name it (as typed at login, so also names of no account)."""
    return username.strip().lower()[:64]


def record_failure(db: Session, counters: list[Counter]) -> None:
    """Count one failure on each counter (an upsert each, so concurrent failures all count)."""
    now = utcnow()
    for counter in counters:
        db.execute(_count_failure(db, counter, now))


def forgive(db: Session, counter: Counter) -> None:
    db.execute(delete(LoginThrottle).where(LoginThrottle.key == counter.key))


def _count_failure(db: Session, counter: Counter, now: datetime) -> Insert:
    """Insert the counter at 1, or add 1 to it: from 1 again when its window has passed, and
    locked for a window when this failure reaches the limit."""
    dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
    lock_ends = now + counter.window
    stale = LoginThrottle.window_started_at < now - counter.window
    failures = case((stale, 1), else_=LoginThrottle.failures + 1)
    statement = dialect.insert(LoginThrottle).values(
        key=counter.key,
        failures=1,
        window_started_at=now,
        locked_until=lock_ends if counter.max_failures <= 1 else None,
    )
    return statement.on_conflict_do_update(
        index_elements=[LoginThrottle.key],
        set_={
            "failures": failures,
            "window_started_at": case((stale, _at(now)), else_=LoginThrottle.window_started_at),
            "locked_until": case(
                (failures >= counter.max_failures, _at(lock_ends)),
                (stale, None),
                else_=LoginThrottle.locked_until,
            ),
        },
    )


def _at(moment: datetime):
    """A timestamp as a bound value of the columns' own type (stored alike on both databases)."""
    return literal(moment, UTCDateTime())
