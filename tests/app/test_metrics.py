"""`/metrics`: request latencies by route template, and figures read from the database."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from app.models import Judgement
from tests.helpers import create_task


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
