"""`/v1`: the OpenAI-compatible API (`GET /v1/models[/{id}]`, `POST /v1/chat/completions`,
`POST /v1/completions`).

Bearer API keys only; cookies are ignored, so no browser session can be ridden here. The
answering itself (limits, streaming, recording) is `app.web.v1.chat`'s, shared with the playground.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.domain import model_registry
from app.models import ModelVersion
from app.web.deps import ApiKeyPrincipal, DbSession
from app.web.v1.chat import IGNORED_FIELDS_HEADER, serve_generation
from app.web.v1.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    ModelList,
)

router = APIRouter(prefix="/v1", tags=["openai"], max_body_size=2 * 1024 * 1024)

CURRENT = "current"
GENERATION_RESPONSES = {
    200: {
        "description": "The answer, whole or as server-sent events (`stream`)",
        "headers": {
            IGNORED_FIELDS_HEADER: {
                "description": "The unknown request fields that were ignored, comma-separated",
                "schema": {"type": "string"},
            }
        },
    },
    404: {"description": "No served model has this name"},
    503: {
        "description": "No worker can take the request now (with "
        "ALIGNLOOP_INFERENCE=celery: Redis is down, or no inference worker answered)"
    },
}


@router.get("/models")
def list_models(db: DbSession, principal: ApiKeyPrincipal) -> ModelList:
    """The models a request may name, in OpenAI's list shape: every policy version ready to
    serve by its name, and `current` (the promoted version, or `base`) once there is one."""
    versions = model_registry.list_policies(db)
    current = model_registry.current_policy(db)
    cards = [_card(version.name, version) for version in versions]
    if current is not None:
        cards.append(_card(CURRENT, current))
    return ModelList(data=cards)


@router.get("/models/{model_id}")
def get_model(model_id: str, db: DbSession, principal: ApiKeyPrincipal) -> ModelCard:
    """One model that requests may name (a version's name, or `current`), in OpenAI's shape;
    404 when none is served under that name."""
    return _card(model_id, model_registry.served_policy(db, name=model_id))


@router.post("/chat/completions", response_model=None, responses=GENERATION_RESPONSES)
async def chat_completions(
    request: Request, body: ChatCompletionRequest, principal: ApiKeyPrincipal
) -> Response:
    """OpenAI's chat completion: the model's answer to the conversation, whole or streamed as
    server-sent events (`stream`), under an id that `POST /api/feedback` can refer to; the
    `X-Model-Version` header names the version that answered. Refused with 400 for what is not
    supported (tools, JSON output formats, images), 404 for an unknown model, 429 beyond the
    key's concurrent requests or requests per minute, 503 when no worker can take it now."""
    return await serve_generation(
        request, body, principal.user, limit_key=f"key:{principal.api_key_id}"
    )


@router.post("/completions", response_model=None, responses=GENERATION_RESPONSES)
async def completions(
    request: Request, body: CompletionRequest, principal: ApiKeyPrincipal
) -> Response:
    """OpenAI's legacy text completion: one plain-text `prompt` continued as it is (no chat
    template), with the same sampling fields, limits and refusals as chat completions, whole or
    streamed. Refused with 400 for several prompts, token ids, `echo`, `suffix` or
    `best_of`."""
    return await serve_generation(
        request, body, principal.user, limit_key=f"key:{principal.api_key_id}"
    )


def _card(name: str, version: ModelVersion) -> ModelCard:
    return ModelCard(id=name, created=int(version.created_at.timestamp()))
