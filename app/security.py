"""Credentials: password hashing, random tokens and their stored digests, and signed form tokens.

Passwords use argon2id (argon2-cffi). Session tokens and API keys are 256-bit random strings, so
a plain SHA-256 digest is enough to store them: nothing can be guessed offline from the digest,
and lookups stay one indexed query per request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeTimedSerializer

API_KEY_PREFIX = "al_"
DISPLAY_PREFIX_LENGTH = 10

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the username is unknown, so both failures take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """True when `password` matches; `None` (unknown user) costs the same time and is False."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_match(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


class FormSigner:
    """Signs short-lived tokens (the login form's CSRF token) with the secret key."""

    def __init__(self, secret_key: str, purpose: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt=f"alignloop.{purpose}")

    def sign(self, value: str) -> str:
        return self._serializer.dumps(value)

    def verify(self, signed: str | None, expected_value: str | None, max_age_s: int) -> bool:
        if not signed or not expected_value:
            return False
        try:
            value = self._serializer.loads(signed, max_age=max_age_s)
        except BadSignature:
            return False
        return isinstance(value, str) and hmac.compare_digest(value, expected_value)
