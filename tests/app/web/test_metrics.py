"""`/metrics`: request latencies by route template, figures read from the database, the
standard collectors, and the serving figures of chat answers."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from app.inference import ChoiceDone, TextDelta
from app.models import Judgement
from app.web.main import create_app
from app.web.metrics import ObservedStream, ServingMetrics
from tests.helpers import api_key_for, create_task


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_requests_are_counted_by_route_template_and_status(client):
    for _ in range(2):
        client.get("/healthz")
    client.get("/no/such/page/12345")
    samples = scrape(client)
    ok = ("method", "GET"), ("route", "/healthz"), ("status", "200")
    assert samples[("alignloop_http_request_duration_seconds_count", ok)] == 2
    missing = ("method", "GET"), ("route", "unmatched"), ("status", "404")
    assert samples[("alignloop_http_request_duration_seconds_count", missing)] == 1
    assert not any("12345" in str(labels) for _, labels in samples)


def test_collection_figures_come_from_the_database(client, db, rater):
    task = create_task(db)
    db.add(
        Judgement(
            task_id=task.id, rater_id=rater.id, ranking=[r.response_id for r in task.responses]
        )
    )
    db.commit()
    samples = scrape(client)
    assert samples[("alignloop_judgements_total", ())] == 1
    assert samples[("alignloop_tasks", (("status", "open"),))] == 1
    assert samples[("alignloop_round_duration_seconds_count", ())] == 0
    assert samples[("alignloop_generated_tokens_total", ())] == 0


STANDARD_COLLECTORS = ("process_cpu_seconds_total", "python_info", "python_gc_collections_total")
SERVING_FIGURES = (
    "alignloop_chat_requests_in_flight",
    "alignloop_chat_requests_waiting",
    "alignloop_time_to_first_token_seconds_count",
    "alignloop_generation_duration_seconds_count",
    "alignloop_generation_tokens_per_second_count",
)


def sample_names(samples) -> set[str]:
    return {name for name, _ in samples}


def test_process_gc_and_platform_collectors_are_served_by_every_app(
    client, settings, engine, session_factory
):
    second = create_app(settings, engine=engine)  # a second app in this process
    second.state.session_factory = session_factory
    for each in (client, TestClient(second)):
        assert sample_names(scrape(each)) >= set(STANDARD_COLLECTORS)


def test_serving_figures_are_zero_before_any_request(client):
    samples = scrape(client)
    assert {name: samples[(name, ())] for name in SERVING_FIGURES} == dict.fromkeys(
        SERVING_FIGURES, 0
    )


def test_a_refused_chat_request_leaves_nothing_in_flight(client, db, rater):
    headers = api_key_for(db, rater)
    body = {"model": "no-such-model", "messages": [{"role": "user", "content": "Hi"}]}
    assert client.post("/v1/chat/completions", json=body, headers=headers).status_code == 404
    samples = scrape(client)
    assert samples[("alignloop_chat_requests_in_flight", ())] == 0
    assert samples[("alignloop_chat_requests_waiting", ())] == 0
    assert samples[("alignloop_time_to_first_token_seconds_count", ())] == 0


class ScriptedStream:
    """A chat stream that yields `events`, waiting for a go-ahead before each."""

    prompt_tokens = 3

    def __init__(self, events) -> None:
        self.events = events
        self.go = asyncio.Queue()

    async def __aiter__(self):
        for event in self.events:
            await self.go.get()
            yield event

    async def cancel(self) -> None:
        pass


def test_an_answer_is_waiting_until_its_first_token_and_in_flight_until_it_ends():
    registry = CollectorRegistry()
    serving = ServingMetrics(registry)

    def figures() -> tuple[float, float]:
        return tuple(registry.get_sample_value(name) for name in SERVING_FIGURES[:2])

    events = [TextDelta(0, "Hel"), TextDelta(0, "lo"), ChoiceDone(0, "Hello", "stop", 4)]

    async def answer() -> list[tuple[float, float]]:
        observation = serving.accepted()
        scripted = ScriptedStream(events)
        seen = [figures()]
        stream = ObservedStream(scripted, observation).__aiter__()
        for _ in events:
            scripted.go.put_nowait(None)
            await anext(stream)
            seen.append(figures())
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        observation.ended()
        return [*seen, figures()]

    assert asyncio.run(answer()) == [(1, 1), (1, 0), (1, 0), (1, 0), (0, 0)]
    assert registry.get_sample_value("alignloop_time_to_first_token_seconds_count") == 1
    assert registry.get_sample_value("alignloop_generation_duration_seconds_count") == 1
    assert registry.get_sample_value("alignloop_generation_tokens_per_second_sum") > 0
