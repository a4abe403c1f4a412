"""Answering one generation request, from whichever door it came in (`/v1` or the playground).

Per-key limits are taken before anything starts; the request runs on the configured
`app.inference` backend; the answer goes back whole or as OpenAI-style server-sent events, in
the chat shape (`/v1/chat/completions`) or the legacy text shape (`/v1/completions`); a client
that disconnects cancels its generation; every answer is recorded under its public id so that
`POST /api/feedback` can refer to it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from app.db import session_scope
from app.domain import model_registry
from app.domain.feedback import record_completion
from app.inference import ChatJob, ChatStream, ChoiceDone, LogprobEntry, TextDelta
from app.models import ModelVersion, User
from app.web.errors import openai_error_body
from app.web.metrics import ObservedStream
from app.web.ratelimit import KeyLimiter
from app.web.v1.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    CompletionRequest,
    GenerationRequest,
    TextChoice,
    TextCompletion,
    TextLogprobs,
    Usage,
)

log = logging.getLogger(__name__)

VERSION_HEADER = "X-Model-Version"
IGNORED_FIELDS_HEADER = "X-Ignored-Fields"
"""Lists the unknown top-level request fields that were ignored (absent when there were none)."""
DISCONNECT_POLL_S = 0.25


async def serve_generation(
    request: Request, body: GenerationRequest, user: User, *, limit_key: str
) -> Response:
    """The response to one chat or text completion request by `user`, limited under
    `limit_key`."""
    limiter: KeyLimiter = request.app.state.limiter
    # 429 now (every request counts, one for an unknown model too); the slot is released when
    # the answer ends
    slot = await anyio.to_thread.run_sync(limiter.acquire, limit_key)
    observation = request.app.state.metrics.serving.accepted()

    async def release() -> None:  # once, when the answer ends, however it ends
        with anyio.CancelScope(shield=True):  # Redis blocks: off the event loop, even if cancelled
            await anyio.to_thread.run_sync(limiter.release, limit_key, slot)
        observation.ended()

    try:
        version = await anyio.to_thread.run_sync(_served_version, request, body.model)
        started = await request.app.state.inference.start(_job(body, version))
        stream = ObservedStream(started, observation)
    except BaseException:
        await release()
        raise
    answer_type = TextAnswer if isinstance(body, CompletionRequest) else ChatAnswer
    answer = answer_type(version, body, stream)
    headers = _headers(version, body)
    if body.stream:
        events = _sse(request, answer, user, release)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    try:
        await _collect_unless_disconnected(request, answer)
    finally:
        await release()
    await anyio.to_thread.run_sync(_record, request, answer, user)
    return JSONResponse(answer.completion().model_dump(mode="json"), headers=headers)


def _headers(version: ModelVersion, body: GenerationRequest) -> dict[str, str]:
    headers = {VERSION_HEADER: version.name}
    if ignored := body.ignored_fields():
        headers[IGNORED_FIELDS_HEADER] = ", ".join(ignored)
    return headers


class Answer:
    """The choices of one request as they arrive; subclasses give OpenAI's two shapes."""

    id_prefix = ""
    chunk_object = ""

    def __init__(self, version: ModelVersion, body: GenerationRequest, stream: ChatStream) -> None:
        self.public_id = f"{self.id_prefix}-{secrets.token_urlsafe(18)}"
        self.version = version
        self.body = body
        self.stream = stream
        self.created = int(time.time())
        self.done: dict[int, ChoiceDone] = {}

    def event(self, choices: list[dict], **extra) -> str:
        """One server-sent event carrying `choices` (and `extra` fields) in the chunk shape."""
        payload = {
            "id": self.public_id,
            "object": self.chunk_object,
            "created": self.created,
            "model": self.version.name,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    def opening(self) -> list[str]:
        """Events sent before any text."""
        return []

    def delta(self, event: TextDelta) -> str:
        raise NotImplementedError

    def finish(self, event: ChoiceDone) -> str:
        raise NotImplementedError

    def completion(self) -> BaseModel:
        raise NotImplementedError

    def messages(self) -> list[dict[str, str]]:
        """The prompt as recorded for feedback."""
        raise NotImplementedError

    def usage(self) -> Usage:
        completion_tokens = sum(choice.completion_tokens for choice in self.done.values())
        prompt_tokens = self.stream.prompt_tokens
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )

    def fingerprint(self) -> str:
        return f"alignloop-{self.version.name}"


class ChatAnswer(Answer):
    """`chat.completion` and its chunks."""

    id_prefix = "chatcmpl"
    chunk_object = "chat.completion.chunk"
    body: ChatCompletionRequest

    def opening(self) -> list[str]:
        return [
            self._chunk(index, {"role": "assistant", "content": ""}) for index in range(self.body.n)
        ]

    def delta(self, event: TextDelta) -> str:
        return self._chunk(event.index, {"content": event.text}, logprobs=event.logprobs)

    def finish(self, event: ChoiceDone) -> str:
        return self._chunk(event.index, {}, finish_reason=event.finish_reason)

    def _chunk(
        self,
        index: int,
        delta: dict,
        *,
        finish_reason: str | None = None,
        logprobs: list[LogprobEntry] | None = None,
    ) -> str:
        wanted = self.body.logprobs and logprobs is not None
        choice = {
            "index": index,
            "delta": delta,
            "finish_reason": finish_reason,
            "logprobs": {"content": logprobs} if wanted else None,
        }
        return self.event([choice])

    def completion(self) -> ChatCompletion:
        return ChatCompletion(
            id=self.public_id,
            created=self.created,
            model=self.version.name,
            choices=[
                Choice(
                    index=index,
                    message=AssistantMessage(content=done.text),
                    finish_reason=done.finish_reason,
                    logprobs=None
                    if done.logprobs is None
                    else ChoiceLogprobs(content=done.logprobs),
                )
                for index, done in sorted(self.done.items())
            ],
            usage=self.usage(),
            system_fingerprint=self.fingerprint(),
        )

    def messages(self) -> list[dict[str, str]]:
        return [message.as_chat() for message in self.body.messages]


class TextAnswer(Answer):
    """`text_completion` and its chunks (the legacy `/v1/completions`)."""

    id_prefix = "cmpl"
    chunk_object = "text_completion"
    body: CompletionRequest

    def __init__(self, version: ModelVersion, body: GenerationRequest, stream: ChatStream) -> None:
        super().__init__(version, body, stream)
        self.streamed: dict[int, int] = {}  # characters streamed so far, per choice

    def delta(self, event: TextDelta) -> str:
        offset = self.streamed.get(event.index, 0)
        self.streamed[event.index] = offset + len(event.text)
        choice = TextChoice(
            index=event.index,
            text=event.text,
            finish_reason=None,
            logprobs=text_logprobs(event.logprobs, offset) if self._wanted() else None,
        )
        return self.event([choice.model_dump(mode="json")])

    def finish(self, event: ChoiceDone) -> str:
        choice = TextChoice(index=event.index, text="", finish_reason=event.finish_reason)
        return self.event([choice.model_dump(mode="json")])

    def completion(self) -> TextCompletion:
        return TextCompletion(
            id=self.public_id,
            created=self.created,
            model=self.version.name,
            choices=[
                TextChoice(
                    index=index,
                    text=done.text,
                    finish_reason=done.finish_reason,
                    logprobs=None if done.logprobs is None else text_logprobs(done.logprobs, 0),
                )
                for index, done in sorted(self.done.items())
            ],
            usage=self.usage(),
            system_fingerprint=self.fingerprint(),
        )

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.body.text()}]

    def _wanted(self) -> bool:
        return self.body.logprobs is not None


def text_logprobs(entries: list[LogprobEntry], offset: int) -> TextLogprobs:
    """Chat-shaped log-probabilities in the legacy parallel lists; `offset` is where the first
    token starts in the generated text."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry["token"])
    return TextLogprobs(
        tokens=[entry["token"] for entry in entries],
        token_logprobs=[entry["logprob"] for entry in entries],
        top_logprobs=[
            {top["token"]: top["logprob"] for top in entry["top_logprobs"]} for entry in entries
        ],
        text_offset=offsets,
    )


def _served_version(request: Request, name: str) -> ModelVersion:
    with session_scope(request.app.state.session_factory) as db:
        return model_registry.served_policy(db, name=name)


def _job(body: GenerationRequest, version: ModelVersion) -> ChatJob:
    chat = isinstance(body, ChatCompletionRequest)
    return ChatJob(
        version_name=version.name,
        version_path=version.path,
        messages=[message.as_chat() for message in body.messages] if chat else [],
        n=body.n,
        sampling=body.sampling(),
        prompt=None if chat else body.text(),
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
    request: Request, answer: Answer, user: User, release: Callable[[], Awaitable[None]]
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`. A generation
    that fails midway is reported in the stream as an `error` event (as vLLM does), since the
    status line has already gone out."""
    finished = False
    try:
        for opening in answer.opening():
            yield opening
        try:
            async for event in answer.stream:
                if isinstance(event, TextDelta):
                    yield answer.delta(event)
                else:
                    answer.done[event.index] = event
                    yield answer.finish(event)
        except Exception as exc:
            log.warning("stream %s failed: %s", answer.public_id, exc)
            error = openai_error_body(500, "The generation failed on the server.")
            yield f"data: {json.dumps(error)}\n\n"
            yield "data: [DONE]\n\n"
            return
        if answer.body.stream_options and answer.body.stream_options.include_usage:
            yield answer.event([], usage=answer.usage().model_dump())
        yield "data: [DONE]\n\n"
        finished = True
    finally:
        await release()
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
            messages=answer.messages(),
            choices=[
                {"text": choice.text, "finish_reason": choice.finish_reason}
                for _, choice in sorted(answer.done.items())
            ],
            params=answer.body.model_dump(
                exclude={"messages", "prompt", *answer.body.ignored_fields()}, exclude_none=True
            ),
            prompt_tokens=answer.stream.prompt_tokens,
            completion_tokens=answer.usage().completion_tokens,
        )
