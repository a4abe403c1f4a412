"""Serving model versions: engines loaded on first use and swapped without dropping requests.

`ModelServer` keeps an engine per recently used version. When a newly promoted version takes
over, requests already running finish on the old engine, which is closed once drained and when
it falls out of the most-recently-used set. `LocalInference` adapts it to `app.inference` for
the web process's event loop (the embedded default); `worker.serving.on_worker` serves with it
on a worker what `worker.serving.remote` sends from web replicas without a GPU.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from functools import partial

import anyio
from jinja2 import TemplateError

from app.config import Settings
from app.errors import InvalidInput
from app.inference import ChatEvent, ChatJob, ChoiceDone, LogprobEntry, TextDelta
from worker.model_store import ModelStore
from worker.serving.engine import Completion, Generation, GenerationEngine, Sampling, TokenLogprob

log = logging.getLogger(__name__)

MAX_LOADED_VERSIONS = 2


class ModelServer:
    """Engines for the versions being served, at most `max_loaded` at a time."""

    def __init__(self, settings: Settings, *, max_loaded: int = MAX_LOADED_VERSIONS) -> None:
        self.store = ModelStore(settings)
        self.max_loaded = max_loaded
        self._engines: OrderedDict[str, GenerationEngine] = OrderedDict()
        self._lock = threading.Lock()

    def engine(self, name: str, path: str) -> GenerationEngine:
        """The engine serving version `name` (stored in `path`), loading it on first use."""
        with self._lock:
            if (engine := self._engines.get(name)) is not None:
                self._engines.move_to_end(name)
                return engine
            model, tokenizer = self.store.load(path)
            engine = GenerationEngine(model, tokenizer, name=name)
            self._engines[name] = engine
            while len(self._engines) > self.max_loaded:
                _, retired = self._engines.popitem(last=False)
                # Requests still running on it finish first; nothing new reaches it.
                threading.Thread(target=retired.close, name=f"retire-{retired.name}").start()
            return engine

    def close(self) -> None:
        with self._lock:
            engines, self._engines = list(self._engines.values()), OrderedDict()
        for engine in engines:
            engine.close(drain=False)


def sampling_for(job: ChatJob, choice: int) -> Sampling:
    """The engine's sampling settings for choice `choice` of `job` (seeds differ per choice)."""
    fields = dict(job.sampling)
    fields["stop"] = tuple(fields.get("stop") or ())
    bias = fields.get("logit_bias") or {}
    fields["logit_bias"] = tuple((int(token), float(value)) for token, value in bias.items())
    if fields.get("seed") is not None:
        fields["seed"] += choice
    return Sampling(**fields)


def prompt_ids(engine: GenerationEngine, job: ChatJob) -> list[int]:
    """The job's prompt as token ids; a conversation its chat template cannot render (a role
    it does not know, say) is the request's `ValueError`."""
    if job.prompt is not None:
        return engine.encode_text(job.prompt)
    try:
        return engine.encode_chat(job.messages)
    except TemplateError as exc:
        raise ValueError(f"the model's chat template refused the messages: {exc}") from None


def openai_logprobs(entries: tuple[TokenLogprob, ...]) -> list[LogprobEntry]:
    """The engine's log-probabilities in OpenAI's chat shape."""
    return [
        {
            **_logprob(entry.token, entry.logprob),
            "top_logprobs": [_logprob(token, value) for token, value in entry.top],
        }
        for entry in entries
    ]


def _logprob(token: str, value: float) -> LogprobEntry:
    return {"token": token, "logprob": value, "bytes": list(token.encode())}


def choice_done(index: int, done: Completion, sampling: dict) -> ChoiceDone:
    """The event for a finished choice (log-probabilities only when the request asked)."""
    wanted = sampling.get("logprobs") is not None
    return ChoiceDone(
        index,
        done.text,
        done.finish_reason,
        done.completion_tokens,
        openai_logprobs(done.logprobs) if wanted else None,
    )


class LocalChatStream:
    """Events of one request served in this process, delivered onto the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, job: ChatJob, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self._sampling = job.sampling
        self._loop = loop
        self._events: asyncio.Queue[ChatEvent | BaseException] = asyncio.Queue()
        self._remaining = job.n
        self.generations: list[Generation] = []

    def on_text(self, index: int, text: str, logprobs: tuple[TokenLogprob, ...]) -> None:
        event = TextDelta(index, text, openai_logprobs(logprobs))
        self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    def on_done(self, index: int, generation: Generation) -> None:
        done = generation.completion
        event: ChatEvent | BaseException = (
            choice_done(index, done, self._sampling)
            if done is not None
            else RuntimeError(f"generation failed: {generation.error}")
        )
        self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    async def __aiter__(self):
        while self._remaining:
            event = await self._events.get()
            if isinstance(event, BaseException):
                raise event
            if isinstance(event, ChoiceDone):
                self._remaining -= 1
            yield event

    async def cancel(self) -> None:
        for generation in self.generations:
            generation.cancel()


class LocalInference:
    """`app.inference.Inference` with the engines inside this process."""

    def __init__(self, server: ModelServer) -> None:
        self.server = server

    async def start(self, job: ChatJob) -> LocalChatStream:
        engine = await anyio.to_thread.run_sync(
            self.server.engine, job.version_name, job.version_path
        )
        try:
            ids = await anyio.to_thread.run_sync(prompt_ids, engine, job)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        stream = LocalChatStream(asyncio.get_running_loop(), job, len(ids))
        try:
            for index in range(job.n):
                generation = engine.submit(
                    ids, sampling_for(job, index), on_text=partial(stream.on_text, index)
                )
                stream.generations.append(generation)
                generation.add_done_callback(partial(stream.on_done, index))
        except ValueError as exc:
            await stream.cancel()
            raise InvalidInput(str(exc)) from None
        return stream

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self.server.close)
