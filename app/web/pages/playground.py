"""The playground (`/playground`): raters and admins chat with any model version, one or two
side by side, over the same serving path as `/v1`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.domain import model_registry
from app.schemas import error_responses
from app.web.deps import DbSession, PageRater, RaterUser
from app.web.templating import render
from app.web.v1.chat import serve_generation
from app.web.v1.schemas import DEFAULT_MAX_TOKENS, ChatCompletionRequest

router = APIRouter(prefix="/playground")


@router.get("", response_class=HTMLResponse)
def playground(request: Request, db: DbSession, user: PageRater) -> HTMLResponse:
    """The playground (HTML), for raters and admins: chat with any model version, or two side
    by side, and rate the answers."""
    versions = [version.name for version in model_registry.list_policies(db)]
    current = model_registry.current_policy(db)
    context = {
        "versions": versions,
        "current": current.name if current else None,
        "max_tokens": DEFAULT_MAX_TOKENS,
    }
    return render(request, "playground.html", context)


@router.post("/chat", response_model=None, responses=error_responses(404))
async def chat(
    request: Request, body: ChatCompletionRequest, db: DbSession, user: RaterUser
) -> Response:
    """The playground's chat: a chat completion as `POST /v1/chat/completions` makes it, always
    streamed, for a browser signed in as a rater or admin (its session cookie and CSRF header,
    not an API key). Refusals as there, 404 for an unknown model."""
    db.commit()  # end the sign-in lookup's transaction before a generation that may run long
    streamed = body.model_copy(update={"stream": True})
    return await serve_generation(request, streamed, user, limit_key=f"user:{user.id}")
