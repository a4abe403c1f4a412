"""CSRF protection for the forms that work without a session: login, invitation, password reset.

Without a session there is no per-session token to check, so each such form carries a signed
copy of a random nonce that the same response puts in a cookie (a signed double submit). Another
site can make a browser post the form, but it can neither read the cookie nor forge the signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response

from app import security
from app.config import Settings
from app.web.templating import render

FORM_MAX_AGE_S = 2 * 3600


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


@dataclass(frozen=True)
class PublicForm:
    """One kind of public form: what its token is signed for, where it posts, its hidden field."""

    purpose: str
    """Salts the signature, so one form's token is worthless on another."""
    path: str
    """The URL prefix the form posts to; the nonce cookie is sent there only."""
    field: str = "form_token"

    @property
    def cookie(self) -> str:
        return f"alignloop_{self.purpose}"

    def render(
        self,
        request: Request,
        settings: Settings,
        template: str,
        context: dict[str, Any],
        *,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
    ) -> HTMLResponse:
        """Render the form's page with a fresh signed token, and set the matching cookie."""
        nonce = security.new_token()
        context = {**context, self.field: self._signer(settings).sign(nonce)}
        response = render(request, template, context, status_code=status_code, headers=headers)
        response.set_cookie(
            self.cookie,
            nonce,
            max_age=FORM_MAX_AGE_S,
            path=self.path,
            httponly=True,
            samesite="lax",
            secure=is_https(request),
        )
        return response

    def verify(self, request: Request, settings: Settings, signed: str) -> bool:
        nonce = request.cookies.get(self.cookie)
        return self._signer(settings).verify(signed, nonce, FORM_MAX_AGE_S)

    def forget(self, response: Response) -> None:
        """Drop the nonce cookie once the form has done its job."""
        response.delete_cookie(self.cookie, path=self.path)

    def _signer(self, settings: Settings) -> security.FormSigner:
        return security.FormSigner(settings.require_secret_key(), purpose=self.purpose)
