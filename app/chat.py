"""Answering one chat request, from whichever door it came in (`/v1` or the playground).

Per-key limits are taken before anything starts; the request runs on the configured
`app.inference` backend; the answer goes back whole or as OpenAI-style server-sent events; a
client that disconnects cancels its generation; every answer is recorded under its
`chatcmpl-` id so that `POST /api/feedback` can refer to it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app import crud
from app.db import session_scope
from app.feedback import record_completion
from app.inference import ChatJob, ChatStream, ChoiceDone, TextDelta
from app.metrics import ObservedStream
from app.models import ModelVersion, User
from app.openai_schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    Usage,
)
from app.ratelimit import KeyLimiter

log = logging.getLogger(__name__)

VERSION_HEADER = "X-Model-Version"
DISCONNECT_POLL_S = 0.25


async def serve_chat(
    request: Request, body: ChatCompletionRequest, user: User, *, limit_key: str
) -> Response:
    """The response to one chat request by `user`, limited under `limit_key`."""
    limiter: KeyLimiter = request.app.state.limiter
    # 429 now (every request counts, one for an unknown model too); the slot is released when
    # the answer ends
    slot = await anyio.to_thread.run_sync(limiter.acquire, limit_key)
    observation = request.app.state.metrics.serving.accepted()

    def release() -> None:  # once, when the answer ends, however it ends
        limiter.release(limit_key, slot)
        observation.ended()

    try:
        version = await anyio.to_thread.run_sync(_served_version, request, body.model)
        started = await request.app.state.inference.start(_job(body, version))
        stream = ObservedStream(started, observation)
    except BaseException:
        release()
        raise
    answer = Answer(f"chatcmpl-{secrets.token_urlsafe(18)}", version, body, stream)
    headers = {VERSION_HEADER: version.name}
    if body.stream:
        events = _sse(request, answer, user, release)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    try:
        await _collect_unless_disconnected(request, answer)
    finally:
        release()
    await anyio.to_thread.run_sync(_record, request, answer, user)
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
    request: Request, answer: Answer, user: User, release: Callable[[], None]
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`. A generation
    that fails midway is reported in the stream as an `error` event (as vLLM does), since the
    status line has already gone out."""
    finished = False
    try:
        for index in range(answer.body.n):
            yield answer.chunk(index, {"role": "assistant", "content": ""})
        try:
            async for event in answer.stream:
                if isinstance(event, TextDelta):
                    yield answer.chunk(event.index, {"content": event.text})
                else:
                    answer.done[event.index] = event
                    yield answer.chunk(event.index, {}, event.finish_reason)
        except Exception as exc:
            log.warning("stream %s failed: %s", answer.public_id, exc)
            error = {"message": "The generation failed on the server.", "type": "server_error"}
            yield f"data: {json.dumps({'error': error})}\n\n"
            yield "data: [DONE]\n\n"
            return
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
            await anyio.to_thread.run_sync(_record, request, answer, user)


def _record(request: Request, answer: Answer, user: User) -> None:
    with session_scope(request.app.state.session_factory) as db:
        record_completion(
            db,
            public_id=answer.public_id,
            version=answer.version,
            user=user,
            messages=[message.as_chat() for message in answer.body.messages],
            choices=[
                {"text": choice.text, "finish_reason": choice.finish_reason}
                for _, choice in sorted(answer.done.items())
            ],
            params=answer.body.model_dump(exclude={"messages"}, exclude_none=True),
            prompt_tokens=answer.stream.prompt_tokens,
            completion_tokens=answer.usage().completion_tokens,
        )
