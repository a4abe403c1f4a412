"""`/v1`: the OpenAI-compatible API (`GET /v1/models`, `POST /v1/chat/completions`).

Bearer API keys only; cookies are ignored, so no browser session can be ridden here. The
answering itself (limits, streaming, recording) is `app.chat`'s, shared with the playground.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app import crud
from app.chat import serve_chat
from app.deps import ApiKeyPrincipal, DbSession
from app.models import ModelVersion
from app.openai_schemas import (
    ChatCompletionRequest,
    ModelCard,
    ModelList,
)

router = APIRouter(prefix="/v1", tags=["openai"], max_body_size=2 * 1024 * 1024)

CURRENT = "current"


@router.get("/models")
def list_models(db: DbSession, principal: ApiKeyPrincipal) -> ModelList:
    versions = crud.list_policies(db)
    current = crud.current_policy(db)
    cards = [ModelCard(id=version.name, created=_epoch(version)) for version in versions]
    if current is not None:
        cards.append(ModelCard(id=CURRENT, created=_epoch(current)))
    return ModelList(data=cards)


@router.post(
    "/chat/completions",
    response_model=None,
    responses={
        404: {"description": "No served model has this name"},
        503: {
            "description": "No worker can take the request now (with "
            "ALIGNLOOP_INFERENCE=celery: Redis is down, or no inference worker answered)"
        },
    },
)
async def chat_completions(
    request: Request, body: ChatCompletionRequest, principal: ApiKeyPrincipal
) -> Response:
    return await serve_chat(request, body, principal.user, limit_key=f"key:{principal.api_key_id}")


def _epoch(version: ModelVersion) -> int:
    return int(version.created_at.timestamp())
