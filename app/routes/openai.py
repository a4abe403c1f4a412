"""`/v1`: the OpenAI-compatible API (`GET /v1/models`, `POST /v1/chat/completions`).

Bearer API keys only; cookies are ignored, so no browser session can be ridden here. Every
completion is recorded under its id so that `POST /api/feedback` can refer to it. Requests run
on the configured `app.inference` backend; a client that disconnects cancels its generation.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from functools import partial

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app import crud
from app.db import session_scope
from app.deps import ApiKeyPrincipal, DbSession, Principal
from app.feedback import record_completion
from app.inference import ChatJob, ChatStream, ChoiceDone, TextDelta
from app.models import ModelVersion
from app.openai_schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ModelCard,
    ModelList,
    Usage,
)
from app.ratelimit import KeyLimiter

router = APIRouter(prefix="/v1", tags=["openai"], max_body_size=2 * 1024 * 1024)

VERSION_HEADER = "X-Model-Version"
CURRENT = "current"
DISCONNECT_POLL_S = 0.25


@router.get("/models")
def list_models(db: DbSession, principal: ApiKeyPrincipal) -> ModelList:
    versions = crud.list_policies(db)
    current = crud.current_policy(db)
    cards = [ModelCard(id=version.name, created=_epoch(version)) for version in versions]
    if current is not None:
        cards.append(ModelCard(id=CURRENT, created=_epoch(current)))
    return ModelList(data=cards)


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    request: Request, body: ChatCompletionRequest, principal: ApiKeyPrincipal
) -> Response:
    version = await anyio.to_thread.run_sync(_served_version, request, body.model)
    limiter: KeyLimiter = request.app.state.limiter
    limiter.acquire(principal.api_key_id)  # 429 now; the slot is released when the answer ends
    release = partial(limiter.release, principal.api_key_id)
    try:
        stream = await request.app.state.inference.start(_job(body, version))
    except BaseException:
        release()
        raise
    answer = Answer(f"chatcmpl-{secrets.token_urlsafe(18)}", version, body, stream)
    headers = {VERSION_HEADER: version.name}
    if body.stream:
        events = _sse(request, answer, principal, release)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    try:
        await _collect_unless_disconnected(request, answer)
    finally:
        release()
    await anyio.to_thread.run_sync(_record, request, answer, principal)
    return JSONResponse(answer.completion().model_dump(mode="json"), headers=headers)


class Answer:
    """The choices of one request as they arrive."""

    def __init__(
        self, public_id: str, version: ModelVersion, body: ChatCompletionRequest, stream: ChatStream
    ) -> None:
        self.public_id = public_id
        self.version = version
        self.body = body
        self.stream = stream
        self.created = int(time.time())
        self.done: dict[int, ChoiceDone] = {}

    def chunk(self, index: int, delta: dict, finish_reason: str | None = None) -> str:
        payload = {
            "id": self.public_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.version.name,
            "choices": [
                {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            ],
        }
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    def usage(self) -> Usage:
        completion_tokens = sum(choice.completion_tokens for choice in self.done.values())
        prompt_tokens = self.stream.prompt_tokens
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )

    def completion(self) -> ChatCompletion:
        return ChatCompletion(
            id=self.public_id,
            created=self.created,
            model=self.version.name,
            choices=[
                Choice(
                    index=index,
                    message=AssistantMessage(content=self.done[index].text),
                    finish_reason=self.done[index].finish_reason,
                )
                for index in sorted(self.done)
            ],
            usage=self.usage(),
            system_fingerprint=f"alignloop-{self.version.name}",
        )


def _served_version(request: Request, name: str) -> ModelVersion:
    with session_scope(request.app.state.session_factory) as db:
        return crud.served_policy(db, name=name)


def _job(body: ChatCompletionRequest, version: ModelVersion) -> ChatJob:
    return ChatJob(
        version_name=version.name,
        version_path=version.path,
        messages=[message.as_chat() for message in body.messages],
        n=body.n,
        sampling={
            "max_new_tokens": body.token_limit(),
            "temperature": body.temperature,
            "top_p": body.top_p,
            "stop": body.stop_strings(),
            "seed": body.seed,
            "min_new_tokens": min(body.min_tokens, body.token_limit()),
        },
    )


async def _collect_unless_disconnected(request: Request, answer: Answer) -> None:
    async def collect() -> None:
        async for event in answer.stream:
            if isinstance(event, ChoiceDone):
                answer.done[event.index] = event

    collecting = asyncio.ensure_future(collect())
    try:
        while not collecting.done():
            if await request.is_disconnected():
                await answer.stream.cancel()
                collecting.cancel()
                break
            await asyncio.wait({collecting}, timeout=DISCONNECT_POLL_S)
        await collecting
    except asyncio.CancelledError:
        await answer.stream.cancel()
        raise


async def _sse(
    request: Request, answer: Answer, principal: Principal, release: Callable[[], None]
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""
    finished = False
    try:
        for index in range(answer.body.n):
            yield answer.chunk(index, {"role": "assistant", "content": ""})
        async for event in answer.stream:
            if isinstance(event, TextDelta):
                yield answer.chunk(event.index, {"content": event.text})
            else:
                answer.done[event.index] = event
                yield answer.chunk(event.index, {}, event.finish_reason)
        if answer.body.stream_options and answer.body.stream_options.include_usage:
            usage = {
                "id": answer.public_id,
                "object": "chat.completion.chunk",
                "created": answer.created,
                "model": answer.version.name,
                "choices": [],
                "usage": answer.usage().model_dump(),
            }
            yield f"data: {json.dumps(usage)}\n\n"
        yield "data: [DONE]\n\n"
        finished = True
    finally:
        release()
        if not finished:  # the client went away (or the server is stopping): stop generating
            await answer.stream.cancel()
        else:
            await anyio.to_thread.run_sync(_record, request, answer, principal)


def _record(request: Request, answer: Answer, principal: Principal) -> None:
    with session_scope(request.app.state.session_factory) as db:
        record_completion(
            db,
            public_id=answer.public_id,
            version=answer.version,
            user=principal.user,
            messages=[message.as_chat() for message in answer.body.messages],
            choices=[
                {"text": choice.text, "finish_reason": choice.finish_reason}
                for _, choice in sorted(answer.done.items())
            ],
            params=answer.body.model_dump(exclude={"messages"}, exclude_none=True),
            prompt_tokens=answer.stream.prompt_tokens,
            completion_tokens=answer.usage().completion_tokens,
        )


def _epoch(version: ModelVersion) -> int:
    return int(version.created_at.timestamp())
