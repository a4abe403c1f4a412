"""Verified credentials: an API key or a session cookie checked against the database once, then
remembered by this process for a few seconds.

Why: authentication ran a query on every request, the largest single share of the rater API's
CPU. A credential verified here is served from memory for `REMEMBER_SECONDS`, and using it
writes nothing (an API key's `last_used_at` moves when the key is verified, at most once a
minute).

How soon a change takes effect: one made through this process (a key revoked, a session
ended, a user disabled or given another role) makes it forget every credential when its
transaction commits, so it applies to the next request. One made by another process (the CLI,
another web process) applies within `REMEMBER_SECONDS`. A key is remembered per client address:
an address that sends invalid keys is checked against its lock again at once by the process
that saw it fail.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import event
from sqlalchemy.orm import Session

from app.models import ApiKey, KeyScope, Role, WebSession, utcnow

REMEMBER_SECONDS = 5.0
"""How long a verified credential is trusted without asking the database again: the longest a
revocation made by another process can take to apply."""
MAX_REMEMBERED = 10_000
_CHANGED = "credentials_changed"


@dataclass(frozen=True)
class Credential:
    """Who a verified credential speaks for, and with what power."""

    user_id: int
    user_role: Role
    via: Literal["session", "api_key"]
    api_key_id: int | None = None
    scope: KeyScope | None = None
    """The API key's scope; None for a browser session."""
    csrf_token: str | None = None
    """The browser session's CSRF token."""
    expires_at: datetime | None = None
    """When the key or session itself ends; never remembered past it."""

    @classmethod
    def of_key(cls, api_key: ApiKey) -> Credential:
        return cls(
            user_id=api_key.user_id,
            user_role=api_key.user.role,
            via="api_key",
            api_key_id=api_key.id,
            scope=api_key.scope,
            expires_at=api_key.expires_at,
        )

    @classmethod
    def of_session(cls, web_session: WebSession) -> Credential:
        return cls(
            user_id=web_session.user_id,
            user_role=web_session.user.role,
            via="session",
            csrf_token=web_session.csrf_token,
            expires_at=web_session.expires_at,
        )

    @property
    def power(self) -> KeyScope:
        """What the caller may do: the user's role, narrowed by the key's scope."""
        of_role = KeyScope.of_role(self.user_role)
        return of_role if self.scope is None else self.scope.narrowed_to(of_role)

    @property
    def role(self) -> Role | None:
        """The role the caller acts with; None for an `inference` key (`/v1` only)."""
        return None if self.power is KeyScope.INFERENCE else Role(self.power.value)


class RememberedCredentials:
    """Credentials verified recently, by token digest and client address."""

    def __init__(
        self,
        seconds: float = REMEMBER_SECONDS,
        capacity: int = MAX_REMEMBERED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds, self.capacity, self._clock = seconds, capacity, clock
        self._entries: dict[tuple[str, str], tuple[float, Credential]] = {}
        self._lock = threading.Lock()

    def recall(self, digest: str, address: str) -> Credential | None:
        entry = self._entries.get((digest, address))
        if entry is None:
            return None
        remembered_at, credential = entry
        ended = credential.expires_at is not None and credential.expires_at <= utcnow()
        if ended or self._clock() - remembered_at > self.seconds:
            with self._lock:
                self._entries.pop((digest, address), None)
            return None
        return credential

    def remember(self, digest: str, address: str, credential: Credential) -> None:
        with self._lock:
            if len(self._entries) >= self.capacity:  # a flood of distinct tokens: start over
                self._entries.clear()
            self._entries[(digest, address)] = (self._clock(), credential)

    def forget_address(self, address: str) -> None:
        with self._lock:
            for key in [key for key in self._entries if key[1] == address]:
                del self._entries[key]

    def forget_all(self) -> None:
        with self._lock:
            self._entries.clear()


REMEMBERED = RememberedCredentials()
"""This process's memory of verified credentials."""


def credentials_changed(db: Session) -> None:
    """Make this process forget every remembered credential once `db`'s transaction commits
    (called by whatever revokes, ends or re-roles a credential)."""
    db.info[_CHANGED] = True


@event.listens_for(Session, "after_commit")
def _forget_after_commit(session: Session) -> None:
    if session.info.pop(_CHANGED, False):
        REMEMBERED.forget_all()


@event.listens_for(Session, "after_rollback")
def _nothing_changed(session: Session) -> None:
    session.info.pop(_CHANGED, None)
