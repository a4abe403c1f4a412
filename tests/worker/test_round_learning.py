"""Learning with the real default model: simulated raters who follow a rule, one quick round,
and a new policy that follows the rule more often than the base.

The rule, this test's own: the shorter answer is the better one (raters rank answers by word
count). Raters judge the base's candidates through the REST API; one `quick` round (RLOO, with
no separate penalty for answers cut off at the token limit, so that only the raters' rule
teaches brevity) trains the reward model and the policy; the round's own evaluation then
compares new and base on held-out prompts. Too long for `make test` (about 10 minutes on 2
cores): run it with `pytest -m long`.
"""

from __future__ import annotations

import shutil
import time
import uuid

import pytest
from sqlalchemy import select

from app import bootstrap, crud, jobs, rounds
from app.db import make_session_factory, session_scope
from app.main import create_app
from app.models import Algorithm, ModelKind, Prompt, PromptSplit, Role, Round, RunStatus
from tests.conftest import make_settings
from worker.celery_app import WorkerContext, create_celery
from worker.rounds import run_stage
from worker.tasks import GENERATE_CANDIDATES

PROMPTS = 48
ROUND = {
    "reward_model": {"epochs": 2},
    "policy": {"steps": 10, "learning_rate": 2e-5, "missing_eos_penalty": 0.0},
    "evaluation": {"prompts": 12, "max_new_tokens": 48, "ab_prompts": 0},
}


def words(text: str) -> int:
    return len(text.split())


def rate_everything(client, headers: dict[str, str]) -> int:
    """Judge open tasks until none is left: shortest answer first."""
    judged = 0
    while (task := client.get("/api/tasks/next", headers=headers)).status_code == 200:
        body = task.json()
        ranking = [r["id"] for r in sorted(body["responses"], key=lambda r: words(r["text"]))]
        response = client.post(
            f"/api/tasks/{body['task_id']}/judgement",
            json={"ranking": ranking, "strength": 2},
            headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == 201, response.text
        judged += 1
    return judged


@pytest.mark.long
@pytest.mark.parametrize("committed_engine", ["postgresql"], indirect=True)
def test_one_quick_round_teaches_the_raters_rule(tmp_path, committed_engine, bundled_model_dir):
    started = time.monotonic()
    settings = make_settings(
        tmp_path / "data",
        database_url=committed_engine.url.render_as_string(False),
        max_new_tokens=64,
    )
    factory = make_session_factory(committed_engine)
    shutil.copytree(bundled_model_dir, settings.models_dir / "base")
    with session_scope(factory) as db:
        crud.register_model_version(
            db, name="base", kind=ModelKind.POLICY, path="base", config={"source": "bundled"}
        )
        bootstrap.load_demo_prompts(db)
        rater = crud.create_user(db, username="rita", password="long enough pw", role=Role.RATER)
        _, key = crud.create_api_key(db, user=rater, name="simulation")
        train = db.scalars(
            select(Prompt).where(Prompt.split == PromptSplit.TRAIN).order_by(Prompt.id)
        )
        prompt_ids = [prompt.id for prompt in train if "zh" not in prompt.tags][:PROMPTS]
        job = jobs.create_job(
            db,
            kind=jobs.GENERATE_CANDIDATES,
            params={"prompt_ids": prompt_ids, "per_prompt": 2, "overlap": 1},
            created_by=None,
        )
    celery = create_celery(settings, engine=committed_engine)
    celery.tasks[GENERATE_CANDIDATES].apply(args=[job.id])
    generated = time.monotonic()

    from fastapi.testclient import TestClient

    with TestClient(create_app(settings, engine=committed_engine)) as client:
        judged = rate_everything(client, {"Authorization": f"Bearer {key}"})
    assert judged == PROMPTS

    with session_scope(factory) as db:
        round_ = rounds.start_round(
            db, algorithm=Algorithm.RLOO, preset="quick", overrides=ROUND, created_by=None
        )
    context = WorkerContext(settings, committed_engine, factory)
    round_started = time.monotonic()
    for stage in rounds.STAGES:
        run_stage(context, celery, round_.id, stage.value)
    round_seconds = time.monotonic() - round_started
    with factory() as db:
        round_ = db.get(Round, round_.id)
    assert round_.status == RunStatus.SUCCEEDED, round_.error
    evaluation = round_.metrics["evaluation"]
    print(
        f"\ncandidates {generated - started:.0f} s, {judged} judgements; round "
        f"{round_seconds:.0f} s ({round_.timings}); reward model held-out accuracy "
        f"{round_.metrics['reward_model']['eval_accuracy']}; answer length new "
        f"{evaluation['response_length']:.1f} tokens against base "
        f"{evaluation['parent_response_length']:.1f}; reward {evaluation['reward']:.2f} against "
        f"{evaluation['parent_reward']:.2f}; win rate {evaluation['win_rate']:.2f}; KL "
        f"{evaluation['kl_to_parent']:.2f}"
    )
    assert round_seconds < 15 * 60  # the quick preset's promise on 2 cores
    assert evaluation["response_length"] < 0.9 * evaluation["parent_response_length"]
