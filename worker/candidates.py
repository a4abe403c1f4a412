"""Candidate generation: sample responses from the current policy and turn them into tasks.

When the current version has a parent, half of each prompt's responses come from the parent,
so that raters also give a blind A/B verdict between versions (task kind `ab_eval`). The
answers come from alignloop's engine on this worker, or with `ALIGNLOOP_INFERENCE=openai` from
the external server that serves `/v1` (`worker.serving.external`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import session_scope
from app.domain import model_registry
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
from worker.context import WorkerContext
from worker.job_runner import Progress
from worker.model_store import ModelStore
from worker.serving.engine import GenerationEngine, Sampling
from worker.serving.external import ExternalAnswers
from worker.training.checkpoints import release_memory

CANDIDATE_SAMPLING = {"temperature": 0.8, "top_p": 0.95}
FIRST_BATCH = 4
"""Prompts answered before the first tasks are written: on 2 CPU cores and the default model,
raters can start within a minute."""
MAX_BATCH = 32


@dataclass(frozen=True)
class CandidateRequest:
    """What `POST /api/generations` asks for (stored as the job's params)."""

    per_prompt: int = 2
    overlap: int = 3
    prompt_ids: list[int] | None = None
    model_versions: list[str] | None = None
    sampling: dict[str, Any] = field(default_factory=dict)


def generate_candidates(context: WorkerContext, job: Job, progress: Progress) -> dict[str, Any]:
    """Answer the chosen prompts with each chosen version and turn them into tasks, batch by
    batch: the first batch is small, so raters can start within a minute, and later ones
    grow to fill the engine. A retry goes on with the prompts that have no task yet."""
    request = CandidateRequest(**job.params)
    store = ModelStore(context.settings)
    if not request.model_versions:
        store.ensure_base_version(context.session_factory)  # the first use imports it
    with session_scope(context.session_factory) as db:
        done = _prompts_with_tasks_of_job(db, job.id)
        prompts = [
            (prompt.id, prompt.messages)
            for prompt in choose_prompts(db, request)
            if prompt.id not in done
        ]
        versions = choose_versions(db, request)
        version_refs = [(version.id, version.name, version.path) for version in versions]
    if not prompts:
        if done:  # a retry after every task was committed
            return {"tasks": len(done), "resumed": True}
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
    engines = [_answerer(context.settings, store, name, path) for _, name, path in version_refs]
    tally = _Tally(progress, prompts=len(prompts), tasks=len(done))
    try:
        for start, batch in _batches(prompts):
            samples = _answer(engines, counts, batch, start, sampling, tally)
            with session_scope(context.session_factory) as db:
                tally.tasks += _create_tasks(
                    db, job, request, batch, version_refs, samples, sampling
                )
            tally.answered += len(batch)
            tally.report(tally.answered)
    finally:
        for engine in engines:
            engine.close()
        del engines
        release_memory()  # an idle worker starts the next job from a clean heap
    return {
        "tasks": tally.tasks,
        "prompts": len(prompts) + len(done),
        "versions": [name for _, name, _ in version_refs],
    }


@dataclass
class _Tally:
    """How far a generation job is, for its progress line."""

    progress: Progress
    prompts: int
    tasks: int
    answered: int = 0

    def report(self, answered: float) -> None:
        self.progress(
            answered / self.prompts,
            f"{int(answered)} of {self.prompts} prompts answered, {self.tasks} tasks ready",
        )


class Answerer(Protocol):
    """Answers of one model version: alignloop's engine, or an external server."""

    def generate(
        self,
        conversations: Sequence[list[dict[str, str]]],
        sampling: Sampling,
        *,
        n: int,
        on_progress: Callable[[float], None],
    ) -> list[list[str]]: ...

    def close(self) -> None: ...


class EngineAnswers:
    """An `Answerer` on alignloop's engine, loaded on this worker."""

    def __init__(self, engine: GenerationEngine) -> None:
        self.engine = engine

    def generate(self, conversations, sampling, *, n, on_progress) -> list[list[str]]:
        completions = self.engine.generate(conversations, sampling, n=n, on_progress=on_progress)
        return [[done.text for done in group] for group in completions]

    def close(self) -> None:
        self.engine.close(drain=False)


class ServerAnswers:
    """An `Answerer` on the external server (`ALIGNLOOP_INFERENCE=openai`)."""

    def __init__(self, answers: ExternalAnswers) -> None:
        self.answers = answers

    def generate(self, conversations, sampling, *, n, on_progress) -> list[list[str]]:
        return self.answers.generate(conversations, asdict(sampling), n=n, on_progress=on_progress)

    def close(self) -> None:
        self.answers.close()


def _answerer(settings: Settings, store: ModelStore, name: str, path: str) -> Answerer:
    if settings.inference == "openai":
        return ServerAnswers(ExternalAnswers(settings, name))
    return EngineAnswers(GenerationEngine(*store.load(path), name=name))


def _answer(
    engines: list[Answerer],
    counts: list[int],
    batch: list[tuple[int, list]],
    start: int,
    sampling: Sampling,
    tally: _Tally,
) -> list[list[list[str]]]:
    """Each engine's `count` answers to each prompt of the batch (which begins at prompt
    `start` of the job): `[engine][prompt][answer]`."""
    samples = []
    for step, (engine, count) in enumerate(zip(engines, counts, strict=True)):

        def report(fraction: float, step: int = step) -> None:
            tally.report(tally.answered + (step + fraction) / len(engines) * len(batch))

        # Seeds as if all prompts went in one call: batching does not change the answers.
        seed = None if sampling.seed is None else sampling.seed + start * count
        samples.append(
            engine.generate(
                [messages for _, messages in batch],
                replace(sampling, seed=seed),
                n=count,
                on_progress=report,
            )
        )
    return samples


def _batches(
    prompts: list[tuple[int, list]],
) -> Iterator[tuple[int, list[tuple[int, list]]]]:
    """(offset, prompts) batches of FIRST_BATCH, then twice as many each time up to
    MAX_BATCH prompts."""
    start, size = 0, FIRST_BATCH
    while start < len(prompts):
        yield start, prompts[start : start + size]
        start, size = start + size, min(MAX_BATCH, size * 2)


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
        return [model_registry.get_model_version(db, name=name) for name in request.model_versions]
    current = model_registry.current_policy(db)
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


def _prompts_with_tasks_of_job(db: Session, job_id: int) -> set[int]:
    return set(db.scalars(select(Task.prompt_id).where(Task.generation_job_id == job_id)))


def _create_tasks(
    db: Session,
    job: Job,
    request: CandidateRequest,
    prompts: list[tuple[int, list]],
    version_refs: list[tuple[int, str, str]],
    samples: list[list[list[str]]],
    sampling: Sampling,
) -> int:
    """A task per prompt whose answers differ (`samples[v][i]`: version v's for prompt i)."""
    kind = TaskKind.AB_EVAL if len(samples) > 1 else TaskKind.COMPARE
    generation = {**asdict(sampling), "job_id": job.id}
    created = 0
    for index, (prompt_id, _) in enumerate(prompts):
        answers = [
            (version_id, text)
            for (version_id, _, _), replies in zip(version_refs, samples, strict=True)
            for text in replies[index]
        ]
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
