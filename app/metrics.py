"""Prometheus metrics: `/metrics` in the text exposition format.

Request counts and latencies are measured in this process by a small ASGI middleware,
labelled by route template (never by raw path, which would let clients create series).
Everything else is read from the database when Prometheus scrapes, so the figures are the
same whichever web replica answers: judgements, tasks, jobs waiting (the queue's depth),
rounds and their durations, and generated tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.dashboard import status_counts
from app.models import Job, Judgement, Round, RunStatus, ServedCompletion, Task

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class AppMetrics:
    """The registry of one app: its request histogram and the database collector."""

    def __init__(self, sessions: Callable[[], Session]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "alignloop_http_request_duration_seconds",
            "Time to answer HTTP requests, by method, route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(DatabaseCollector(sessions))


class RequestMetricsMiddleware:
    """Times every HTTP request into `AppMetrics.requests`."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
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
