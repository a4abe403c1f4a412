"""What the web tier asks of a text-generation backend, wherever the model runs.

The web tier never imports torch. In the embedded default `worker.serving.local.LocalInference` runs
the engine inside the web process; with `ALIGNLOOP_INFERENCE=celery`,
`worker.serving.remote.CeleryInference` hands each request to a GPU worker on the `inference`
queue and streams the tokens back through Redis; with `ALIGNLOOP_INFERENCE=openai`,
`worker.serving.external.ExternalInference` sends it to an OpenAI-compatible server (vLLM,
SGLang, TGI). All produce the same events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ChatJob:
    """One request: which stored model, which conversation (or plain-text prompt), how to
    sample, how many."""

    version_name: str
    version_path: str
    messages: list[dict[str, str]]
    n: int = 1
    sampling: dict[str, Any] = field(default_factory=dict)
    """Fields of `worker.serving.engine.Sampling` (max_new_tokens, temperature, top_p, top_k,
    stop, seed, penalties, logprobs), with `logit_bias` as a `{token id: bias}` mapping."""
    prompt: str | None = None
    """A plain-text prompt (`/v1/completions`), sent as is instead of the `messages` in the
    chat template."""


LogprobEntry = dict[str, Any]
"""One token's log-probability in OpenAI's chat shape: `token`, `logprob`, `bytes`,
`top_logprobs` (a list of the same without `top_logprobs`)."""


@dataclass(frozen=True)
class TextDelta:
    index: int
    text: str
    logprobs: list[LogprobEntry] = field(default_factory=list)
    """The tokens this delta completes, when the request asked for log-probabilities."""


@dataclass(frozen=True)
class ChoiceDone:
    index: int
    text: str
    finish_reason: str
    completion_tokens: int
    logprobs: list[LogprobEntry] | None = None
    """Every token's, when the request asked for log-probabilities."""


ChatEvent = TextDelta | ChoiceDone


class ChatStream(Protocol):
    """A running request: iterate its events until every choice is done, or cancel it."""

    prompt_tokens: int

    def __aiter__(self) -> AsyncIterator[ChatEvent]: ...

    async def cancel(self) -> None: ...


class Inference(Protocol):
    async def start(self, job: ChatJob) -> ChatStream:
        """Begin generating; raises `InvalidInput` (before any token) for a request that cannot
        run, such as one longer than the model's context."""
        ...

    async def close(self) -> None: ...
