"""Prometheus metrics: `/metrics` in the text exposition format.

Measured in this process: request counts, latencies and requests in flight, by a small ASGI
middleware labelled by route template (never by raw path, which would let clients create
series); the serving figures of chat answers (`/v1` and the playground), observed in one place,
`ObservedStream`, around each answer's events; and the standard process, platform and GC
collectors. Everything else is read from the database when Prometheus scrapes, so the figures
are the same whichever web replica answers: judgements, tasks, jobs waiting (the job queue's
depth), rounds and their durations, and generated tokens.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.domain.dashboard import status_counts
from app.inference import ChatEvent, ChatStream, ChoiceDone
from app.models import Job, Judgement, Round, RunStatus, ServedCompletion, Task

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
GENERATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TOKENS_PER_SECOND_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class AppMetrics:
    """The registry of one app: request and serving figures, the standard collectors and the
    database collector. Each app has its own registry (tests build many apps in one process,
    and prometheus_client refuses a second registration of the same collector in one)."""

    def __init__(self, sessions: Callable[[], Session]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "alignloop_http_request_duration_seconds",
            "Time to answer HTTP requests, by method, route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.requests_in_flight = Gauge(
            "alignloop_http_requests_in_flight",
            "HTTP requests this process is answering now.",
            registry=self.registry,
        )
        self.serving = ServingMetrics(self.registry)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(DatabaseCollector(sessions))


class ServingMetrics:
    """Figures of the chat answers this process serves, whatever backend generates them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.in_flight = Gauge(
            "alignloop_chat_requests_in_flight",
            "Chat requests (/v1 and playground) accepted and not yet answered in full.",
            registry=registry,
        )
        self.waiting = Gauge(
            "alignloop_chat_requests_waiting",
            "Chat requests accepted and waiting for their first token: queued in the engine "
            "(or for an inference worker), or in prefill.",
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "alignloop_time_to_first_token_seconds",
            "From accepting a chat request to its first generated text.",
            buckets=GENERATION_BUCKETS,
            registry=registry,
        )
        self.generation_duration = Histogram(
            "alignloop_generation_duration_seconds",
            "From accepting a chat request to its last choice being complete.",
            buckets=GENERATION_BUCKETS,
            registry=registry,
        )
        self.tokens_per_second = Histogram(
            "alignloop_generation_tokens_per_second",
            "Completion tokens of each chat answer (all choices) per second of its duration.",
            buckets=TOKENS_PER_SECOND_BUCKETS,
            registry=registry,
        )

    def accepted(self) -> AnswerObservation:
        """Start observing one answer; call its `ended` exactly once when it ends."""
        return AnswerObservation(self)


class AnswerObservation:
    """One chat answer between `ServingMetrics.accepted` and `ended`."""

    def __init__(self, metrics: ServingMetrics) -> None:
        self.metrics = metrics
        self.started = time.perf_counter()
        self.waiting = True
        metrics.in_flight.inc()
        metrics.waiting.inc()

    def first_event(self) -> None:
        if self.waiting:
            self.waiting = False
            self.metrics.waiting.dec()
            self.metrics.time_to_first_token.observe(time.perf_counter() - self.started)

    def completed(self, completion_tokens: int) -> None:
        seconds = time.perf_counter() - self.started
        self.metrics.generation_duration.observe(seconds)
        self.metrics.tokens_per_second.observe(completion_tokens / max(seconds, 1e-6))

    def ended(self) -> None:
        if self.waiting:
            self.waiting = False
            self.metrics.waiting.dec()
        self.metrics.in_flight.dec()


class ObservedStream:
    """A `ChatStream` whose events are observed into an `AnswerObservation` on their way."""

    def __init__(self, stream: ChatStream, observation: AnswerObservation) -> None:
        self._stream = stream
        self._observation = observation

    def __getattr__(self, name: str) -> Any:  # prompt_tokens, and whatever else streams carry
        return getattr(self._stream, name)

    async def __aiter__(self) -> AsyncIterator[ChatEvent]:
        completion_tokens = 0
        async for event in self._stream:
            self._observation.first_event()
            if isinstance(event, ChoiceDone):
                completion_tokens += event.completion_tokens
            yield event
        self._observation.completed(completion_tokens)

    async def cancel(self) -> None:
        await self._stream.cancel()


class RequestMetricsMiddleware:
    """Times every HTTP request into `AppMetrics.requests`."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500
        self.metrics.requests_in_flight.inc()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.requests_in_flight.dec()
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - started
            )


class DatabaseCollector:
    """Figures read from the database at scrape time."""

    def __init__(self, sessions: Callable[[], Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        with self.sessions() as db:
            yield _counter(
                "alignloop_judgements",
                "Judgements submitted, corrections included.",
                db.scalar(select(func.count()).select_from(Judgement)),
            )
            yield _by_status(db, Task.status, "alignloop_tasks", "Rating tasks by status.")
            yield _by_status(db, Job.status, "alignloop_jobs", "Background jobs by status.")
            yield _by_status(db, Round.status, "alignloop_rounds", "Training rounds by status.")
            durations = [
                (finished - started).total_seconds()
                for started, finished in db.execute(
                    select(Round.started_at, Round.finished_at).where(
                        Round.status == RunStatus.SUCCEEDED, Round.started_at.is_not(None)
                    )
                )
            ]
            yield SummaryMetricFamily(
                "alignloop_round_duration_seconds",
                "Wall time of the training rounds that succeeded.",
                count_value=len(durations),
                sum_value=sum(durations),
            )
            yield _counter(
                "alignloop_generated_tokens",
                "Tokens generated for /v1 and the playground.",
                db.scalar(select(func.coalesce(func.sum(ServedCompletion.completion_tokens), 0))),
            )


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=float(value or 0))


def _by_status(db: Session, column, name: str, documentation: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["status"])
    for status, count in status_counts(db, column).items():
        family.add_metric([status], count)
    return family
