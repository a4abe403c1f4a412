"""The rater API's hot path stays a few statements per request (issue 16): next and submit
each make one connection checkout and send what `app.domain.assignment` and
`app.domain.judgements` say."""

from __future__ import annotations

import pytest

from tests.conftest import make_settings
from tests.helpers import api_key_for, create_task, statements_on

STATEMENTS = {
    "postgresql": {"next": 2, "held": 2, "submit": 3},
    "sqlite": {"next": 5, "held": 2, "submit": 5},
}
"""On PostgreSQL the rater's state and one CTE, then the lock, one read and one CTE; SQLite's
single writer runs the CTEs' steps one by one. A held task is the state and one read."""
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


@pytest.fixture
def settings(tmp_path, engine):
    """No gold mixing: a gold draw would add its own pick first (one more statement)."""
    url = engine.url.render_as_string(False)
    return make_settings(tmp_path / "data", database_url=url, gold_rate=0.0)


@pytest.fixture
def headers(db, rater):
    headers = api_key_for(db, rater)
    for _ in range(3):
        create_task(db, overlap=2)
    db.commit()
    return headers


def sent_by(client, connection, method: str, path: str, **request) -> tuple[object, list[str]]:
    with statements_on(connection) as sent:
        response = client.request(method, path, **request)
    return response, [
        sql for sql in sent if not sql.lstrip().upper().startswith(TRANSACTION_CONTROL)
    ]


def test_next_and_submit_send_a_few_statements(client, connection, headers):
    client.get("/api/tasks/mine", headers=headers)  # the key is verified and remembered
    expected = STATEMENTS[connection.dialect.name]
    response, sent = sent_by(client, connection, "GET", "/api/tasks/next", headers=headers)
    assert response.status_code == 200 and len(sent) == expected["next"], sent
    task = response.json()
    response, sent = sent_by(client, connection, "GET", "/api/tasks/next", headers=headers)
    assert response.json() == task and len(sent) == expected["held"], sent
    ranking = [each["id"] for each in task["responses"]]
    path = f"/api/tasks/{task['task_id']}/judgement"
    response, sent = sent_by(
        client, connection, "POST", path, headers=headers, json={"ranking": ranking}
    )
    assert response.status_code == 201 and len(sent) == expected["submit"], sent
