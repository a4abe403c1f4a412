"""Serving on an external OpenAI-compatible server (ALIGNLOOP_INFERENCE=openai): vLLM, SGLang,
TGI, or another alignloop. `ExternalInference` is the web side (`/v1`, the playground), which
never loads torch; `ExternalAnswers` answers a candidate-generation job's prompts on a worker.

Each model version is served under its own name (`vllm serve data/models/<version>
--served-model-name <version>`), so a request for version V goes out with `model: V`, and its
answer streams back as server-sent events in OpenAI's chunk format. Usage arrives in the last
chunk (`stream_options.include_usage`), so the choices' ends are held back until it has come.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from app.config import Settings
from app.errors import InvalidInput, ServiceUnavailable
from app.inference import ChatEvent, ChatJob, ChoiceDone, LogprobEntry, TextDelta

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 180.0
"""The longest wait for the next chunk (a cold server may first load the model)."""
PARALLEL_REQUESTS = 8
"""Candidate prompts in flight at once: enough for the server to batch them."""


class ExternalChatStream:
    """Events of one request answered by the external server, read from its event stream."""

    def __init__(self, response: httpx.Response, *, chat: bool) -> None:
        self.prompt_tokens = 0
        self._response = response
        self._chat = chat

    async def __aiter__(self) -> AsyncIterator[ChatEvent]:
        finished: dict[int, tuple[str, str]] = {}  # index: (text, finish reason)
        texts: dict[int, list[str]] = {}
        entries: dict[int, list[LogprobEntry]] = {}
        tokens: dict[int, int] = {}
        usage: dict[str, int] = {}
        try:
            async for chunk in _chunks(self._response):
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices", []):
                    index = choice["index"]
                    text, logprobs = self._piece(choice)
                    texts.setdefault(index, []).append(text)
                    entries.setdefault(index, []).extend(logprobs)
                    tokens[index] = tokens.get(index, 0) + (len(logprobs) or bool(text))
                    if text or logprobs:
                        yield TextDelta(index, text, logprobs)
                    if choice.get("finish_reason"):
                        finished[index] = ("".join(texts[index]), choice["finish_reason"])
        finally:
            await self._response.aclose()
        self.prompt_tokens = usage.get("prompt_tokens", 0)
        counted = _token_counts(tokens, usage.get("completion_tokens"))
        for index, (text, reason) in sorted(finished.items()):
            yield ChoiceDone(index, text, reason, counted.get(index, 0), entries[index] or None)

    def _piece(self, choice: dict[str, Any]) -> tuple[str, list[LogprobEntry]]:
        """The text a chunk adds to its choice, and its tokens' log-probabilities in the chat
        shape (a completion's are converted)."""
        logprobs = choice.get("logprobs") or {}
        if self._chat:
            return (choice.get("delta") or {}).get("content") or "", logprobs.get("content") or []
        return choice.get("text") or "", _chat_shaped(logprobs)

    async def cancel(self) -> None:
        """Close the connection: the server stops generating for a client that went away."""
        await self._response.aclose()


class ExternalInference:
    """`app.inference.Inference` on an OpenAI-compatible server at `settings.inference_url`."""

    def __init__(self, settings: Settings) -> None:
        options = _client_options(settings)
        self.url = options["base_url"]
        self.client = httpx.AsyncClient(**options)

    async def start(self, job: ChatJob) -> ExternalChatStream:
        """Send the request and read its status: the server's refusal of a request (a 400 or
        422) is the client's `InvalidInput`; any other failure is a 503 naming the server."""
        path, body = _path_and_body(job)
        request = self.client.build_request("POST", path, json=body)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            message = f"The inference server {self.url} is unavailable: {exc}"
            raise ServiceUnavailable(message) from None
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            raise _refusal(response, job.version_name)
        return ExternalChatStream(response, chat=job.prompt is None)

    async def close(self) -> None:
        await self.client.aclose()


class ExternalAnswers:
    """A model version's answers to many conversations from the external server, for a
    candidate-generation job: the engine's `generate`, as texts."""

    def __init__(self, settings: Settings, version_name: str) -> None:
        self.version_name = version_name
        self.client = httpx.Client(**_client_options(settings))

    def generate(
        self,
        conversations: Sequence[list[dict[str, str]]],
        sampling: dict[str, Any],
        *,
        n: int = 1,
        on_progress: Callable[[float], None] | None = None,
    ) -> list[list[str]]:
        """`n` answers to each conversation (`sampling`: the engine's fields); with a seed,
        conversation i is asked with seed `seed + i * n`, as the engine seeds it."""
        seed = sampling.get("seed")
        jobs = [
            ChatJob(
                version_name=self.version_name,
                version_path="",
                messages=list(conversation),
                n=n,
                sampling={**sampling, "seed": None if seed is None else seed + index * n},
            )
            for index, conversation in enumerate(conversations)
        ]
        answers = []
        with ThreadPoolExecutor(PARALLEL_REQUESTS) as pool:
            for done, texts in enumerate(pool.map(self._answers, jobs), start=1):
                answers.append(texts)
                if on_progress:
                    on_progress(done / len(jobs))
        return answers

    def _answers(self, job: ChatJob) -> list[str]:
        path, body = _path_and_body(job, stream=False)
        try:
            response = self.client.post(path, json=body)
        except httpx.HTTPError as exc:
            message = f"The inference server {self.client.base_url} is unavailable: {exc}"
            raise ServiceUnavailable(message) from None
        if response.status_code != 200:
            raise _refusal(response, job.version_name)
        choices = sorted(response.json()["choices"], key=lambda choice: choice["index"])
        return [choice["message"]["content"] or "" for choice in choices]

    def close(self) -> None:
        self.client.close()


def _client_options(settings: Settings) -> dict[str, Any]:
    """Where the server is, its key, and how long to wait for it."""
    key = settings.inference_api_key.get_secret_value() if settings.inference_api_key else ""
    return {
        "base_url": settings.inference_url.rstrip("/"),
        "headers": {"Authorization": f"Bearer {key}"} if key else {},
        "timeout": httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
    }


def _path_and_body(job: ChatJob, *, stream: bool = True) -> tuple[str, dict[str, Any]]:
    """Where the request goes, and its body: a chat, or a plain-text prompt's completion."""
    body = _common(job, stream=stream)
    alternatives = job.sampling.get("logprobs")
    if job.prompt is not None:
        logprobs = {} if alternatives is None else {"logprobs": alternatives}
        return "/completions", {**body, "prompt": job.prompt, **logprobs}
    logprobs = {} if alternatives is None else {"logprobs": True, "top_logprobs": alternatives}
    return "/chat/completions", {**body, "messages": job.messages, **logprobs}


def _common(job: ChatJob, *, stream: bool) -> dict[str, Any]:
    """The fields every kind shares, from the engine's sampling fields; those left at their
    defaults are not sent (`top_k` and `min_tokens` are vLLM's, which alignloop's own /v1
    accepts too)."""
    sampling = job.sampling
    biases = dict(sampling.get("logit_bias") or {})  # a mapping, or the engine's pairs
    logit_bias = {str(token): bias for token, bias in biases.items()}
    fields = {
        "model": job.version_name,
        "n": job.n,
        "stream": stream,
        "stream_options": {"include_usage": True} if stream else None,
        "max_tokens": sampling.get("max_new_tokens"),
        "temperature": sampling.get("temperature"),
        "top_p": sampling.get("top_p"),
        "top_k": sampling.get("top_k") or None,
        "min_tokens": sampling.get("min_new_tokens") or None,
        "stop": sampling.get("stop") or None,
        "seed": sampling.get("seed"),
        "presence_penalty": sampling.get("presence_penalty") or None,
        "frequency_penalty": sampling.get("frequency_penalty") or None,
        "logit_bias": logit_bias or None,
    }
    return {name: value for name, value in fields.items() if value is not None}


async def _chunks(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON chunks of an event stream, until `[DONE]`; an `error` event (how a server
    reports a failure once the status line has gone out) raises."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line.removeprefix("data:").strip()
        if data == "[DONE]":
            return
        chunk = json.loads(data)
        if "error" in chunk:
            raise RuntimeError(f"the inference server failed: {chunk['error']}")
        yield chunk


def _chat_shaped(logprobs: dict[str, Any]) -> list[LogprobEntry]:
    """A completion chunk's log-probabilities (parallel lists, alternatives as dicts) as chat
    entries."""
    tops = logprobs.get("top_logprobs") or [{}] * len(logprobs.get("tokens") or [])
    return [
        _entry(token, value, [_entry(other, other_value) for other, other_value in top.items()])
        for token, value, top in zip(
            logprobs.get("tokens") or [], logprobs.get("token_logprobs") or [], tops, strict=True
        )
    ]


def _entry(token: str, value: float, alternatives: list | None = None) -> LogprobEntry:
    entry = {"token": token, "logprob": value, "bytes": list(token.encode())}
    return entry if alternatives is None else {**entry, "top_logprobs": alternatives}


def _token_counts(streamed: dict[int, int], total: int | None) -> dict[int, int]:
    """Each choice's completion tokens: the tokens streamed for it (a server sends about one
    a chunk), or the usage's total where there is one choice."""
    if total is not None and len(streamed) == 1:
        return dict.fromkeys(streamed, total)
    return streamed


def _refusal(response: httpx.Response, version: str) -> InvalidInput | ServiceUnavailable:
    try:
        error = response.json()
        message = error.get("error", {}).get("message") or error.get("detail") or response.text
    except ValueError:
        message = response.text
    if response.status_code in (400, 422):
        return InvalidInput(str(message))
    return ServiceUnavailable(
        f"The inference server answered {response.status_code} for model {version!r}: {message}"
    )
