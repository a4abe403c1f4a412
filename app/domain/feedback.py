"""Served completions and what clients say about them, turned into rating material.

Every `/v1` completion is recorded under its `chatcmpl-` id. Feedback on one adds its
conversation to the prompt pool (so the next candidate generation samples it again), and a
preferred answer becomes a rating task that puts it next to the served one.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain import prompt_store
from app.errors import InvalidInput, NotFound
from app.models import (
    Feedback,
    ModelVersion,
    Prompt,
    Response,
    Role,
    ServedCompletion,
    Task,
    TaskResponse,
    User,
)
from app.schemas import ChatMessage, FeedbackIn, PromptIn

FEEDBACK_SOURCE = "feedback"


def record_completion(
    db: Session,
    *,
    public_id: str,
    version: ModelVersion,
    user: User,
    messages: list[dict[str, str]],
    choices: list[dict[str, str]],
    params: dict,
    prompt_tokens: int,
    completion_tokens: int,
) -> ServedCompletion:
    completion = ServedCompletion(
        public_id=public_id,
        model_version_id=version.id,
        user_id=user.id,
        messages=messages,
        choices=choices,
        params=params,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )
    db.add(completion)
    db.flush()
    return completion


def give_feedback(db: Session, *, user: User, body: FeedbackIn, overlap: int) -> Feedback:
    """Store feedback on one of `user`'s completions (admins may rate any) and act on it."""
    completion = db.scalar(
        select(ServedCompletion).where(ServedCompletion.public_id == body.completion_id)
    )
    if completion is None or (completion.user_id != user.id and user.role != Role.ADMIN):
        raise NotFound("Completion not found")
    if body.choice_index >= len(completion.choices):
        raise InvalidInput(f"choice_index must be below {len(completion.choices)}")
    prompt = _prompt_for(db, completion, user)
    feedback = Feedback(
        completion_id=completion.id,
        choice_index=body.choice_index,
        user_id=user.id,
        rating=body.rating,
        preferred_text=(body.preferred or "").strip() or None,
        prompt_id=prompt.id if prompt else None,
    )
    if feedback.preferred_text and prompt is not None:
        served = completion.choices[body.choice_index]["text"]
        feedback.task_id = _comparison_task(db, completion, prompt, served, feedback, user, overlap)
    db.add(feedback)
    db.flush()
    return feedback


def _prompt_for(db: Session, completion: ServedCompletion, user: User) -> Prompt | None:
    """The completion's conversation as a prompt (existing or new); None if it is not one
    (for instance a turn too long for the prompt pool)."""
    try:
        prompt_in = PromptIn(
            messages=[ChatMessage(**message) for message in completion.messages],
            source=FEEDBACK_SOURCE,
        )
    except ValueError:
        return None
    prompt_store.add_prompts(db, prompts=[prompt_in], created_by=user)
    return db.scalar(
        select(Prompt).where(Prompt.dedup_hash == prompt_store.prompt_dedup_hash(prompt_in))
    )


def _comparison_task(
    db: Session,
    completion: ServedCompletion,
    prompt: Prompt,
    served_text: str,
    feedback: Feedback,
    user: User,
    overlap: int,
) -> int:
    served = Response(
        prompt_id=prompt.id,
        model_version_id=completion.model_version_id,
        text=served_text,
        generation_params={"kind": "served", "completion_id": completion.public_id},
    )
    preferred = Response(
        prompt_id=prompt.id,
        author_id=user.id,
        text=feedback.preferred_text,
        generation_params={"kind": "feedback", "completion_id": completion.public_id},
    )
    db.add_all([served, preferred])
    db.flush()
    task = Task(prompt_id=prompt.id, required_judgements=overlap)
    task.responses = [
        TaskResponse(response_id=served.id, position=0),
        TaskResponse(response_id=preferred.id, position=1),
    ]
    db.add(task)
    db.flush()
    return task.id
