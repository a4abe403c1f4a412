"""What the admin Data pages read: prompts, tasks and judgements, filtered and paginated, and one
task with everything its raters said about it.

Lists are newest first and keyset-paginated on the primary key (`id < cursor`), so any page
costs the same as the first with hundreds of thousands of rows: OFFSET would read and drop
every row before the page. A page is one query for its rows (counts of related rows come as
correlated subqueries that use the foreign-key indexes), at most one for the labels it shows,
and one count of all the matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from pydantic import Field, StringConstraints, model_validator
from sqlalchemy import ColumnElement, Row, Select, column, exists, func, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from app.db import get_row
from app.models import (
    Judgement,
    ModelVersion,
    Prompt,
    PromptSplit,
    Response,
    Task,
    TaskKind,
    TaskResponse,
    TaskStatus,
    User,
)
from app.schemas import InputModel

PAGE_SIZE = 50
RESPONSE_LABELS = "ABCDEFGH"
MAX_ID = 2**63 - 1
"""The largest id both databases can compare with (a larger one is a 422, not a crash)."""
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
SearchText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]


# --- filters -------------------------------------------------------------------------------------


class ListFilter(InputModel):
    """A list page's query string: its filters and the keyset cursor."""

    before: Id | None = None
    """Show the rows older than this id (the "older" link)."""
    after: Id | None = None
    """Show the rows newer than this id (the "newer" link)."""

    @model_validator(mode="before")
    @classmethod
    def _blank_means_unset(cls, data: Any) -> Any:
        """A plain GET form sends its empty fields as `name=`."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value not in ("", None)}
        return data

    def query_string(self, **cursor: int | None) -> str:
        """These filters with a new cursor, for the pagination links."""
        values = self.model_dump(mode="json", exclude={"before", "after"}, exclude_defaults=True)
        return urlencode(values | {key: value for key, value in cursor.items() if value})


class PromptFilter(ListFilter):
    q: SearchText = ""
    """Text anywhere in the messages' contents, case-insensitive."""
    tag: SearchText = ""
    split: PromptSplit | None = None
    source: SearchText = ""


class TaskFilter(ListFilter):
    status: TaskStatus | None = None
    kind: TaskKind | None = None
    gold: bool | None = None
    prompt: Id | None = None


class JudgementFilter(ListFilter):
    rater: SearchText = ""
    """A username."""
    task: Id | None = None
    since: date | None = None
    until: date | None = None
    """Inclusive: the whole of this day."""


# --- pages ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    rows: Sequence[Row]
    total: int
    """Matches on all pages together."""
    newer: int | None
    """Cursor for the newer rows (`after=`), if there are any."""
    older: int | None
    """Cursor for the older rows (`before=`), if there are any."""


def _page(
    db: Session,
    model: type[Prompt | Task | Judgement],
    columns: Select,
    conditions: list[ColumnElement[bool]],
    at: ListFilter,
) -> Page:
    total = db.scalar(select(func.count()).select_from(model).where(*conditions)) or 0
    query = columns.where(*conditions).limit(PAGE_SIZE + 1)
    if at.after is not None:
        rows = db.execute(query.where(model.id > at.after).order_by(model.id)).all()
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE][::-1]
        return Page(rows, total, newer=rows[0].id if more else None, older=_last_id(rows))
    if at.before is not None:
        query = query.where(model.id < at.before)
    rows = db.execute(query.order_by(model.id.desc())).all()
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    newer = rows[0].id if rows and at.before is not None else None
    return Page(rows, total, newer=newer, older=_last_id(rows) if more else None)


def _last_id(rows: Sequence[Row]) -> int | None:
    return rows[-1].id if rows else None


# --- prompts -------------------------------------------------------------------------------------


def list_prompts(db: Session, filters: PromptFilter) -> Page:
    task_count = select(func.count()).where(Task.prompt_id == Prompt.id).scalar_subquery()
    columns = select(
        Prompt.id,
        Prompt.messages,
        Prompt.tags,
        Prompt.split,
        Prompt.source,
        Prompt.created_at,
        task_count.label("task_count"),
    )
    conditions = []
    if filters.q:
        conditions.append(_messages_contain(db, filters.q))
    if filters.tag:
        conditions.append(_has_tag(db, filters.tag))
    if filters.split:
        conditions.append(Prompt.split == filters.split)
    if filters.source:
        conditions.append(Prompt.source == filters.source)
    return _page(db, Prompt, columns, conditions, filters)


def _is_postgresql(db: Session) -> bool:
    return db.get_bind().dialect.name == "postgresql"


def _messages_contain(db: Session, text: str) -> ColumnElement[bool]:
    """Any message's content holds `text` (LIKE wildcards in it are matched literally).

    Searches the contents, not the JSON text: that would match "role" and "user", and SQLite
    stores non-ASCII characters there as `\\u` escapes."""
    if _is_postgresql(db):
        message = func.jsonb_array_elements(Prompt.messages).table_valued(column("value", JSONB))
        content = message.c.value["content"].astext
    else:
        message = func.json_each(Prompt.messages).table_valued("value")
        content = func.json_extract(message.c.value, "$.content")
    return exists().select_from(message).where(content.icontains(text, autoescape=True))


def _has_tag(db: Session, tag: str) -> ColumnElement[bool]:
    if _is_postgresql(db):
        return type_coerce(Prompt.tags, JSONB).contains([tag])
    element = func.json_each(Prompt.tags).table_valued("value")
    return exists().select_from(element).where(element.c.value == tag)


# --- tasks ---------------------------------------------------------------------------------------


def list_tasks(db: Session, filters: TaskFilter) -> Page:
    response_count = select(func.count()).where(TaskResponse.task_id == Task.id).scalar_subquery()
    columns = select(
        Task.id,
        Task.prompt_id,
        Prompt.messages,
        Task.kind,
        Task.status,
        Task.is_gold,
        Task.judgement_count,
        Task.required_judgements,
        Task.created_at,
        Task.completed_at,
        response_count.label("response_count"),
    ).join(Prompt, Prompt.id == Task.prompt_id)
    conditions = []
    if filters.status:
        conditions.append(Task.status == filters.status)
    if filters.kind:
        conditions.append(Task.kind == filters.kind)
    if filters.gold is not None:
        conditions.append(Task.is_gold == filters.gold)
    if filters.prompt:
        conditions.append(Task.prompt_id == filters.prompt)
    return _page(db, Task, columns, conditions, filters)


# --- judgements ----------------------------------------------------------------------------------


def list_judgements(db: Session, filters: JudgementFilter) -> tuple[Page, dict[int, str]]:
    """The page, and each judgement's ranking in the labels raters saw (`A > B = C`)."""
    columns = select(
        Judgement.id,
        Judgement.task_id,
        User.username.label("rater"),
        Judgement.ranking,
        Judgement.supersedes_id,
        Judgement.all_bad,
        Judgement.critique,
        Judgement.time_spent_ms,
        Judgement.created_at,
    ).join(User, User.id == Judgement.rater_id)
    page = _page(db, Judgement, columns, _judgement_conditions(filters), filters)
    labels = _response_labels(db, {row.task_id for row in page.rows})
    rankings = {row.id: ranking_text(row.ranking, labels.get(row.task_id, {})) for row in page.rows}
    return page, rankings


def _judgement_conditions(filters: JudgementFilter) -> list[ColumnElement[bool]]:
    conditions = []
    if filters.rater:
        rater_id = select(User.id).where(User.username == filters.rater.lower())
        conditions.append(Judgement.rater_id == rater_id.scalar_subquery())
    if filters.task:
        conditions.append(Judgement.task_id == filters.task)
    if filters.since:
        conditions.append(Judgement.created_at >= _start_of(filters.since))
    if filters.until:
        conditions.append(Judgement.created_at < _start_of(filters.until + timedelta(days=1)))
    return conditions


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _response_labels(db: Session, task_ids: set[int]) -> dict[int, dict[int, str]]:
    """`{task_id: {response_id: "A"}}`: responses lettered in their task's position order."""
    links = db.execute(
        select(TaskResponse.task_id, TaskResponse.response_id, TaskResponse.position).where(
            TaskResponse.task_id.in_(task_ids)
        )
    )
    labels: dict[int, dict[int, str]] = {}
    for task_id, response_id, position in links:
        labels.setdefault(task_id, {})[response_id] = RESPONSE_LABELS[position]
    return labels


def ranking_text(ranking: list[Any], labels: dict[int, str]) -> str:
    """`[3, [1, 2]]` as `A > B = C`; a response outside the task (a rewrite) as `#id`."""
    groups = (entry if isinstance(entry, list) else [entry] for entry in ranking)
    return " > ".join(" = ".join(_label(labels, key) for key in group) for group in groups)


def _label(labels: dict[int, str], key: Any) -> str:
    """A response's letter; JSON object keys (in ratings and flags) arrive as strings."""
    try:
        return labels.get(int(key), f"#{key}")
    except (TypeError, ValueError):
        return f"#{key}"


# --- one task ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResponseView:
    label: str
    id: int
    text: str
    author: str
    """The model version's name, or `written by <username>` for a person's response."""


@dataclass(frozen=True)
class JudgementView:
    judgement: Judgement
    rater: str
    ranking: str
    ratings: list[str]
    """One line per response: `A: helpfulness 6, honesty 7`."""
    flags: list[str]
    rewrite: str | None
    superseded_by: int | None
    """The correction that replaced this judgement, if any."""


@dataclass(frozen=True)
class TaskDetail:
    task: Task
    prompt: Prompt
    responses: list[ResponseView]
    judgements: list[JudgementView]


def task_detail(db: Session, task_id: int) -> TaskDetail:
    """The task, its prompt and responses in position order, and every judgement on it
    (corrections included), in five queries whatever the number of judgements."""
    task = get_row(db, Task, task_id, missing="No task has this id")
    responses = _task_responses(db, task_id)
    labels = {response.id: response.label for response in responses}
    judged = db.execute(
        select(Judgement, User.username)
        .join(User, User.id == Judgement.rater_id)
        .where(Judgement.task_id == task_id)
        .order_by(Judgement.id)
    ).all()
    rewrite_ids = [j.rewrite_response_id for j, _ in judged if j.rewrite_response_id]
    rewrites = dict(
        db.execute(select(Response.id, Response.text).where(Response.id.in_(rewrite_ids))).all()
    )
    superseded_by = {j.supersedes_id: j.id for j, _ in judged if j.supersedes_id}
    judgements = [
        JudgementView(
            judgement=judgement,
            rater=rater,
            ranking=ranking_text(judgement.ranking, labels),
            ratings=_per_response(judgement.ratings or {}, labels, _aspects_text),
            flags=_per_response(judgement.flags or {}, labels, ", ".join),
            rewrite=rewrites.get(judgement.rewrite_response_id),
            superseded_by=superseded_by.get(judgement.id),
        )
        for judgement, rater in judged
    ]
    return TaskDetail(task, db.get(Prompt, task.prompt_id), responses, judgements)


def _task_responses(db: Session, task_id: int) -> list[ResponseView]:
    rows = db.execute(
        select(TaskResponse.position, Response.id, Response.text, ModelVersion.name, User.username)
        .join(Response, Response.id == TaskResponse.response_id)
        .outerjoin(ModelVersion, ModelVersion.id == Response.model_version_id)
        .outerjoin(User, User.id == Response.author_id)
        .where(TaskResponse.task_id == task_id)
        .order_by(TaskResponse.position)
    )
    return [
        ResponseView(
            label=RESPONSE_LABELS[position],
            id=response_id,
            text=text,
            author=model or (f"written by {author}" if author else "unknown"),
        )
        for position, response_id, text, model, author in rows
    ]


def _per_response(values: dict[str, Any], labels: dict[int, str], describe) -> list[str]:
    lines = [(_label(labels, key), describe(value)) for key, value in values.items() if value]
    return [f"{label}: {text}" for label, text in sorted(lines)]


def _aspects_text(aspects: dict[str, int]) -> str:
    return ", ".join(f"{aspect} {score}" for aspect, score in aspects.items())
