"""Candidate generation: sample responses from the current policy and turn them into tasks.

When the current version has a parent, half of each prompt's responses come from the parent,
so that raters also give a blind A/B verdict between versions (task kind `ab_eval`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from app import crud
from app.db import session_scope
from app.models import (
    Job,
    ModelKind,
    ModelStatus,
    ModelVersion,
    Prompt,
    PromptSplit,
    Response,
    Task,
    TaskKind,
    TaskResponse,
    TaskStatus,
)
from worker.celery_app import WorkerContext
from worker.engine import GenerationEngine, Sampling
from worker.job_runner import Progress
from worker.model_store import ModelStore, release_memory

CANDIDATE_SAMPLING = {"temperature": 0.8, "top_p": 0.95}


@dataclass(frozen=True)
class CandidateRequest:
    """What `POST /api/generations` asks for (stored as the job's params)."""

    per_prompt: int = 2
    overlap: int = 3
    prompt_ids: list[int] | None = None
    model_versions: list[str] | None = None
    sampling: dict[str, Any] = field(default_factory=dict)


def generate_candidates(context: WorkerContext, job: Job, progress: Progress) -> dict[str, Any]:
    request = CandidateRequest(**job.params)
    store = ModelStore(context.settings)
    if not request.model_versions:
        store.ensure_base_version(context.session_factory)  # the first use imports it
    with session_scope(context.session_factory) as db:
        if already := _tasks_of_job(db, job.id):  # a retry after the tasks were committed
            return {"tasks": already, "resumed": True}
        prompts = [(prompt.id, prompt.messages) for prompt in choose_prompts(db, request)]
        versions = choose_versions(db, request)
        version_refs = [(version.id, version.name, version.path) for version in versions]
    if not prompts:
        return {"tasks": 0, "prompts": 0, "note": "no prompts without open tasks"}
    sampling = Sampling(
        **{
            **CANDIDATE_SAMPLING,
            "max_new_tokens": context.settings.max_new_tokens,
            "seed": job.id,  # unless asked otherwise, the same job samples the same answers
            **request.sampling,
        }
    )
    counts = samples_per_version(request.per_prompt, len(version_refs))
    conversations = [messages for _, messages in prompts]
    samples: list[tuple[int, list[list[str]]]] = []
    for step, ((version_id, name, path), count) in enumerate(
        zip(version_refs, counts, strict=True)
    ):
        engine = GenerationEngine(*store.load(path), name=name)

        def report(fraction: float, step: int = step) -> None:
            progress((step + fraction) / len(version_refs))

        try:
            completions = engine.generate(conversations, sampling, n=count, on_progress=report)
        finally:
            engine.close(drain=False)
            del engine
            release_memory()  # the next version, or an idle worker, starts from a clean heap
        samples.append((version_id, [[done.text for done in group] for group in completions]))
    with session_scope(context.session_factory) as db:
        created = _create_tasks(db, job, request, prompts, samples, sampling)
    return {
        "tasks": created,
        "prompts": len(prompts),
        "versions": [name for _, name, _ in version_refs],
    }


def choose_prompts(db: Session, request: CandidateRequest) -> list[Prompt]:
    if request.prompt_ids:
        return list(db.scalars(select(Prompt).where(Prompt.id.in_(request.prompt_ids))))
    has_open_task = exists().where(Task.prompt_id == Prompt.id, Task.status == TaskStatus.OPEN)
    return list(
        db.scalars(
            select(Prompt)
            .where(Prompt.split == PromptSplit.TRAIN, ~has_open_task)
            .order_by(Prompt.id)
        )
    )


def choose_versions(db: Session, request: CandidateRequest) -> list[ModelVersion]:
    if request.model_versions:
        return [crud.get_model_version(db, name=name) for name in request.model_versions]
    current = crud.current_policy(db)
    parent = db.get(ModelVersion, current.parent_id) if current.parent_id else None
    if (
        parent is not None
        and parent.kind == ModelKind.POLICY
        and parent.status == ModelStatus.READY
    ):
        return [current, parent]
    return [current]


def samples_per_version(per_prompt: int, versions: int) -> list[int]:
    """Split a prompt's responses between versions as evenly as possible: (3, 2) -> [2, 1]."""
    return [per_prompt // versions + (index < per_prompt % versions) for index in range(versions)]


def _tasks_of_job(db: Session, job_id: int) -> int:
    return len(db.scalars(select(Task.id).where(Task.generation_job_id == job_id)).all())


def _create_tasks(
    db: Session,
    job: Job,
    request: CandidateRequest,
    prompts: list[tuple[int, list]],
    samples: list[tuple[int, list[list[str]]]],
    sampling: Sampling,
) -> int:
    kind = TaskKind.AB_EVAL if len(samples) > 1 else TaskKind.COMPARE
    generation = {**asdict(sampling), "job_id": job.id}
    created = 0
    for index, (prompt_id, _) in enumerate(prompts):
        answers = [(version_id, text) for version_id, replies in samples for text in replies[index]]
        if len({text for _, text in answers}) < 2:
            continue  # identical answers leave nothing to compare
        responses = [
            Response(
                prompt_id=prompt_id,
                model_version_id=version_id,
                text=text,
                generation_params=generation,
            )
            for version_id, text in answers
        ]
        db.add_all(responses)
        db.flush()
        task = Task(
            prompt_id=prompt_id,
            kind=kind,
            required_judgements=request.overlap,
            generation_job_id=job.id,
        )
        task.responses = [
            TaskResponse(response_id=response.id, position=position)
            for position, response in enumerate(responses)
        ]
        db.add(task)
        created += 1
    return created
