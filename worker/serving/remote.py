"""The web side of serving on workers (ALIGNLOOP_INFERENCE=celery); it never loads torch.

A request goes out as a Celery task on the `inference` queue (see
`worker.serving.on_worker`); its events come back on a Redis pub/sub channel that the web process
subscribes to before sending, and cancelling sets a key that the worker polls.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict
from functools import partial

import anyio
import redis.asyncio

from app.broker import send_task
from app.config import Settings
from app.errors import InvalidInput, ServiceUnavailable
from app.inference import ChatJob, ChoiceDone, TextDelta
from app.tasks_contract import INFER

FIRST_EVENT_TIMEOUT_S = 180.0  # includes loading the model on a cold worker
EVENT_TIMEOUT_S = 120.0
CANCEL_TTL_S = 600
BROKER_DOWN = "The task queue (Redis) is unavailable; try again shortly."


def cancel_key(channel: str) -> str:
    return f"{channel}:cancel"


class CeleryChatStream:
    """Events of one request served by a worker, read from its Redis channel."""

    def __init__(self, pubsub, broker, channel: str, choices: int, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self._pubsub = pubsub
        self._broker = broker
        self._channel = channel
        self._remaining = choices

    async def __aiter__(self):
        try:
            while self._remaining:
                event = await _next_event(self._pubsub, EVENT_TIMEOUT_S)
                kind = event.pop("type")
                if kind == "delta":
                    yield TextDelta(**event)
                elif kind == "done":
                    self._remaining -= 1
                    yield ChoiceDone(**event)
                else:
                    raise RuntimeError(event.get("message", "the worker failed"))
        finally:
            await self._pubsub.aclose()

    async def cancel(self) -> None:
        await self._broker.set(cancel_key(self._channel), 1, ex=CANCEL_TTL_S)
        await self._pubsub.aclose()


class CeleryInference:
    """`app.inference.Inference` on GPU workers: the request goes out on the `inference` queue
    and its tokens come back over Redis pub/sub."""

    def __init__(self, settings: Settings, celery) -> None:
        self.celery = celery
        self.broker = redis.asyncio.Redis.from_url(settings.redis_url)

    async def start(self, job: ChatJob) -> CeleryChatStream:
        """Send the request and wait for its first event; 503 at once when Redis is down."""
        channel = f"alignloop:infer:{uuid.uuid4().hex}"
        pubsub = self.broker.pubsub()
        try:
            await pubsub.subscribe(channel)  # before sending: published events are not kept
        except redis.ConnectionError:
            await pubsub.aclose()
            raise ServiceUnavailable(BROKER_DOWN) from None
        send = partial(send_task, self.celery, INFER, args=[asdict(job), channel])
        if not await anyio.to_thread.run_sync(send):
            await pubsub.aclose()
            raise ServiceUnavailable(BROKER_DOWN)
        try:
            first = await _next_event(pubsub, FIRST_EVENT_TIMEOUT_S)
        except TimeoutError:
            await pubsub.aclose()
            raise ServiceUnavailable("No inference worker answered; is one running?") from None
        if first["type"] == "error":
            await pubsub.aclose()
            raise InvalidInput(first["message"])
        return CeleryChatStream(pubsub, self.broker, channel, job.n, first["prompt_tokens"])

    async def close(self) -> None:
        await self.broker.aclose()


async def _next_event(pubsub, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is not None:
            return json.loads(message["data"])
    raise TimeoutError("no event from the inference worker")
