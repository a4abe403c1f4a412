"""Admin console page times with 100,000 judgements in PostgreSQL.

What it measures
    The server time of the admin pages that must stay fast as data grows: the dashboard
    (`/admin`), quality control (`/admin/quality`) and models (`/admin/models`, with its
    Bradley-Terry leaderboard and 200 bootstrap samples), plus the rounds and data pages for
    information. Each page is requested in-process through the ASGI app (no network), `--repeat`
    times after two warm-up requests; the figure is the median, with the 95th percentile.
    Target: every gated page under 100 ms with 100,000 judgements.

    The reference is the same pages on the same server, in the same run, over an empty
    database (one admin): the ratio "full / empty" shows what the data costs, independent of
    how fast this machine happens to be today.

The data
    120 raters; 100,000 judgements spread over 30 days on 2-response tasks (3 judgements
    each), each with its assignment (shown order) and time spent; 1% gold tasks;
    five policy versions with blind A/B tasks between them for the leaderboard; a few rounds
    with curves and logs. Then the quality figures are computed once, as the background task
    does (its time is reported too).

Usage
    .venv/bin/python bench/admin_pages.py [--judgements 100000] [--repeat 30]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

The benchmark creates scratch databases beside the named one and drops them at the end.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seeding import link_response_pairs  # noqa: E402  (bench/seeding.py, next to this file)

from app import migrate  # noqa: E402
from app.config import Settings  # noqa: E402
from app.db import make_engine, make_session_factory, session_scope  # noqa: E402
from app.domain import accounts, quality
from app.models import (  # noqa: E402
    Algorithm,
    Assignment,
    AssignmentStatus,
    Judgement,
    ModelKind,
    ModelStatus,
    ModelVersion,
    Prompt,
    Response,
    Role,
    Round,
    RoundLog,
    RoundMetric,
    RoundStage,
    RunStatus,
    Task,
    TaskKind,
    TaskStatus,
    User,
    utcnow,
)
from app.web.main import create_app  # noqa: E402
from tests.helpers import PASSWORD, TEST_SECRET, browser_login, scratch_postgres_database  # noqa: E402

GATED = ["/admin", "/admin/quality", "/admin/models"]
INFORMATION = ["/admin/rounds", "/admin/rounds/1", "/admin/data/prompts", "/admin/data/tasks"]
TARGET_MS = 100.0
RATERS = 120
OVERLAP = 3
VERSIONS = ["base", "round-1", "round-2", "round-3", "round-4"]
AB_SHARE = 0.05
GOLD_SHARE = 0.01
CHUNK = 5000


def main() -> None:
    args = parse_args()
    print(f"# admin pages: {args.judgements} judgements, {args.repeat} requests per page")
    machine = platform.processor() or platform.machine()
    print(f"# {platform.node()} · {machine} · Python {platform.python_version()}")
    with scratch_postgres_database(args.database_url, prefix="bench_admin_empty") as empty_url:
        empty = page_times(empty_url, args.repeat, seed=None)
    with scratch_postgres_database(args.database_url, prefix="bench_admin_full") as full_url:
        full = page_times(full_url, args.repeat, seed=args.judgements)
    report(empty, full)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--judgements", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument(
        "--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    return parser.parse_args()


def page_times(url: str, repeat: int, *, seed: int | None) -> dict[str, tuple[float, float]]:
    """Median and 95th-percentile milliseconds per page, over `url` seeded with `seed`
    judgements (None: only the admin)."""
    engine = make_engine(url)
    migrate.upgrade(engine)
    with session_scope(make_session_factory(engine)) as db:
        accounts.create_user(db, username="admin", password=PASSWORD, role=Role.ADMIN)
    if seed:
        started = time.perf_counter()
        fill(engine, seed)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE"))  # as autovacuum would, after a bulk load
        print(f"# seeded {seed} judgements in {time.perf_counter() - started:.0f} s")
        refreshed = refresh_quality(engine)
        print(f"# quality figures computed in {refreshed:.1f} s")
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            data_dir=Path(folder), database_url=url, secret_key=TEST_SECRET, dev_mode=True
        )
        app = create_app(settings, engine=engine)
        with TestClient(app) as client:
            browser_login(client, "admin")
            pages = GATED + (INFORMATION if seed else INFORMATION[:1])
            times = {path: measure(client, path, repeat) for path in pages}
    engine.dispose()
    return times


def measure(client: TestClient, path: str, repeat: int) -> tuple[float, float]:
    for _ in range(2):
        assert client.get(path).status_code == 200, path
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.95 * len(samples)))]


def refresh_quality(engine: Engine) -> float:
    started = time.perf_counter()
    with session_scope(make_session_factory(engine)) as db:
        quality.refresh_quality(db, Settings(secret_key=TEST_SECRET, dev_mode=True))
    return time.perf_counter() - started


# --- the data --------------------------------------------------------------------------------


def fill(engine: Engine, judgements: int) -> None:
    rng = random.Random(7)
    with engine.begin() as connection:
        raters = insert_raters(connection)
        versions = insert_versions(connection)
        made = 0
        while made < judgements:
            count = min(CHUNK, judgements - made)
            insert_tasks(connection, rng, raters, versions, count)
            made += count
        insert_rounds(connection)


def insert_raters(connection) -> list[int]:
    rows = [
        {"username": f"rater{index}", "password_hash": "x", "role": Role.RATER, "is_active": True}
        for index in range(RATERS)
    ]
    return list(connection.scalars(insert(User).returning(User.id), rows))


def insert_versions(connection) -> list[int]:
    ids: list[int] = []
    for name in VERSIONS:
        row = {
            "name": name,
            "kind": ModelKind.POLICY,
            "status": ModelStatus.READY,
            "path": name,
            "parent_id": ids[-1] if ids else None,
            "config": {},
            "metrics": {"evaluation": {"win_rate": 0.6, "kl_to_parent": 1.5}},
        }
        ids.append(connection.scalar(insert(ModelVersion).returning(ModelVersion.id), row))
    return ids


def insert_tasks(connection, rng: random.Random, raters, versions, judgements: int) -> None:
    """`judgements` judgements on fresh 2-response tasks, `OVERLAP` raters each."""
    now = utcnow()
    tasks = -(-judgements // OVERLAP)
    prompt_ids = list(
        connection.scalars(
            insert(Prompt).returning(Prompt.id),
            [
                {
                    "messages": [{"role": "user", "content": f"bench prompt {rng.random()}"}],
                    "tags": [rng.choice(["code", "advice", "writing", "facts"])],
                    "dedup_hash": f"{rng.getrandbits(128):032x}",
                    "source": "bench",
                }
                for _ in range(tasks)
            ],
        )
    )
    response_rows, kinds = [], []
    for prompt_id in prompt_ids:
        blind = rng.random() < AB_SHARE
        kinds.append(TaskKind.AB_EVAL if blind else TaskKind.COMPARE)
        pair = rng.sample(versions, 2) if blind else [versions[-1]] * 2
        response_rows += [
            {"prompt_id": prompt_id, "model_version_id": version, "text": f"answer {rng.random()}"}
            for version in pair
        ]
    response_ids = list(connection.scalars(insert(Response).returning(Response.id), response_rows))
    task_rows = [
        {
            "prompt_id": prompt_id,
            "kind": kinds[index],
            "status": TaskStatus.COMPLETE,
            "required_judgements": OVERLAP,
            "judgement_count": OVERLAP,
            "is_gold": gold,
            "gold_ranking": [response_ids[2 * index]] if gold else None,
            "created_at": now - timedelta(days=30 * rng.random()),
        }
        for index, prompt_id in enumerate(prompt_ids)
        for gold in [rng.random() < GOLD_SHARE]
    ]
    task_ids = list(connection.scalars(insert(Task).returning(Task.id), task_rows))
    link_response_pairs(connection, task_ids, response_ids)
    insert_judgements(connection, rng, raters, task_ids, response_ids, task_rows, judgements)


def insert_judgements(connection, rng, raters, task_ids, response_ids, task_rows, judgements):
    assignments, verdicts = [], []
    for index, task_id in enumerate(task_ids):
        first, second = response_ids[2 * index], response_ids[2 * index + 1]
        better = first if rng.random() < 0.7 else second  # raters mostly agree
        for rater in rng.sample(raters, OVERLAP):
            if len(verdicts) == judgements:
                break
            shown = [first, second] if rng.random() < 0.5 else [second, first]
            choice = better if rng.random() < 0.8 else ({first, second} - {better}).pop()
            when = task_rows[index]["created_at"] + timedelta(minutes=rng.random() * 60)
            assignments.append(
                {
                    "task_id": task_id,
                    "rater_id": rater,
                    "status": AssignmentStatus.SUBMITTED,
                    "response_order": shown,
                    "leased_at": when,
                    "expires_at": when + timedelta(minutes=30),
                    "finished_at": when,
                }
            )
            verdicts.append(
                {
                    "task_id": task_id,
                    "rater_id": rater,
                    "ranking": [choice, ({first, second} - {choice}).pop()],
                    "time_spent_ms": int(rng.lognormvariate(10, 0.6)),
                    "created_at": when,
                    "flags": {},
                }
            )
    assignment_ids = list(
        connection.scalars(insert(Assignment).returning(Assignment.id), assignments)
    )
    for verdict, assignment_id in zip(verdicts, assignment_ids, strict=True):
        verdict["assignment_id"] = assignment_id
    connection.execute(insert(Judgement), verdicts)


def insert_rounds(connection) -> None:
    for number in range(1, 4):
        round_id = connection.scalar(
            insert(Round).returning(Round.id),
            {
                "algorithm": Algorithm.PPO,
                "preset": "quick",
                "status": RunStatus.SUCCEEDED,
                "stage": RoundStage.DONE,
                "progress": 1.0,
                "config": {},
                "metrics": {
                    "evaluation": {"win_rate": 0.6},
                    "register": {"version": f"round-{number}"},
                },
                "timings": {},
            },
        )
        connection.execute(
            insert(RoundMetric),
            [
                {
                    "round_id": round_id,
                    "stage": RoundStage.POLICY,
                    "step": step,
                    "name": name,
                    "value": step * 0.1,
                }
                for step in range(1, 101)
                for name in ("reward", "kl", "policy_loss", "value_loss")
            ],
        )
        connection.execute(
            insert(RoundLog),
            [
                {
                    "round_id": round_id,
                    "stage": RoundStage.POLICY,
                    "level": "INFO",
                    "message": f"line {line}",
                }
                for line in range(50)
            ],
        )


# --- the report --------------------------------------------------------------------------------


def report(empty: dict, full: dict) -> None:
    print()
    print("| page | empty: median (p95) ms | full: median (p95) ms | full / empty | under 100 ms |")
    print("|---|---|---|---|---|")
    for path, (median, p95) in full.items():
        reference = empty.get(path)
        ratio = f"{median / reference[0]:.2f}" if reference else "—"
        shown = f"{reference[0]:.1f} ({reference[1]:.1f})" if reference else "—"
        gate = ("yes" if median < TARGET_MS else "**no**") if path in GATED else "(not gated)"
        print(f"| `{path}` | {shown} | {median:.1f} ({p95:.1f}) | {ratio} | {gate} |")
    slowest = max(full[path][0] for path in GATED)
    print(
        f"\nslowest gated page: {slowest:.1f} ms (target {TARGET_MS:.0f} ms): "
        f"{'met' if slowest < TARGET_MS else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
