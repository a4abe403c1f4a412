"""Request and response bodies of the JSON API. Inputs forbid unknown fields and bound sizes."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar, get_args

from annotated_types import Interval
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    computed_field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from app.errors import InvalidInput
from app.models import (
    DEFAULT_ALGORITHM,
    Algorithm,
    ApiKey,
    KeyScope,
    PromptSplit,
    RaterQuality,
    Role,
    RoundStage,
    User,
)

MAX_MESSAGE_CHARS = 32_000
MAX_MESSAGES = 64
MAX_TAGS = 32
INT64_MAX = 2**63 - 1

# Every integer a client sends is one of these (or narrower), so that a number no column can
# hold is a 422 here, never an overflow in the database driver
# (tests/app/web/api/test_input_bounds.py walks the OpenAPI description to hold every route to it).
RowId = Annotated[int, Interval(ge=1, le=INT64_MAX)]
"""A database id, in a path, a query or a body."""
Int64 = Annotated[int, Interval(ge=-INT64_MAX - 1, le=INT64_MAX)]
"""Any other integer that is stored or handed to torch (seeds, settings)."""

USERNAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{2,63}")
USERNAME_RULE = (
    "A username is 3 to 64 characters: letters (a to z), digits, dots, dashes or underscores, "
    "starting with a letter or digit."
)
"""The rule in words, which every refusal gives rather than the pattern (README, forms, CLI)."""


def _follows_username_rule(value: str) -> str:
    if not USERNAME_PATTERN.fullmatch(value):
        raise PydanticCustomError("username", USERNAME_RULE)
    return value


Username = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_lower=True),
    AfterValidator(_follows_username_rule),
    WithJsonSchema(
        {"type": "string", "pattern": f"^{USERNAME_PATTERN.pattern}$", "description": USERNAME_RULE}
    ),
]
"""Stored lower-cased, so "Rita" and "rita" are one account."""
Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class InputModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    """The body of an error answer (`app.errors`)."""

    detail: str | list[dict[str, Any]]
    """What went wrong, in words; for fields that failed validation, one entry per field."""


ERROR_DESCRIPTIONS = {
    401: "Not signed in, or the key is invalid, expired or revoked, or a credential was sent in "
    "the query string (use the Authorization header)",
    403: "The role, or the API key's scope, does not allow this (or a session's CSRF token is "
    "missing, or another site's Origin)",
    404: "No such id among the caller's",
    409: "Conflicts with the current state (the message says which)",
    412: "`If-Match` (or the form's ETag) names an older state than the current one",
    413: "The body is larger than ALIGNLOOP_MAX_BODY_BYTES",
    422: "Invalid input",
    429: "Too many requests, or too many failed attempts from this address or for this "
    "account; wait `Retry-After` seconds",
    503: "The database is unavailable; retry after `Retry-After` seconds",
}
"""What an error status means wherever a route does not say more."""


def documented(responses: dict[int, str | None]) -> dict[int | str, dict[str, Any]]:
    """A route's OpenAPI `responses`: what each status code means there (None: the meaning in
    `ERROR_DESCRIPTIONS`), errors with their `{"detail": ...}` body. The statuses every route of
    its kind answers are added by `app.web.api_description`."""
    entries: dict[int | str, dict[str, Any]] = {}
    for code, text in responses.items():
        entries[code] = {"description": text or ERROR_DESCRIPTIONS[code]}
        if code >= 400:
            entries[code]["model"] = ErrorOut
        if code == 429:
            wait = {
                "description": "Seconds until a retry can succeed",
                "schema": {"type": "integer"},
            }
            entries[code]["headers"] = {"Retry-After": wait}
    return entries


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """`documented` for errors that mean here what they mean everywhere."""
    return documented(dict.fromkeys(status_codes))


QUEUED = (
    "Queued: sent to a worker at once, or, while the broker is down, by the reclaim task "
    "within a minute of its return"
)
"""What a 202 means for work that a worker runs."""

NO_READY_MODEL = "No model is ready (the base model is still being prepared, say)"
"""What a 409 means for work that needs a model to start from."""


class TokenRequest(InputModel):
    username: Annotated[str, StringConstraints(max_length=64)]
    password: Annotated[str, StringConstraints(max_length=256)]
    scope: KeyScope | None = Field(
        default=None, description="What the token may do; by default all the user's role may."
    )


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime
    scope: KeyScope


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: Role
    locale: str


class ApiKeyCreate(InputModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    scope: KeyScope = Field(
        default=KeyScope.INFERENCE,
        description="`inference` (`/v1` only, the default: the least a key pasted into an "
        "OpenAI client needs), `rater` or `admin`; never more than the owner's role.",
    )


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str
    scope: KeyScope
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself; shown this once and never again.")

    @classmethod
    def shown_once(cls, api_key: ApiKey, key: str) -> ApiKeyCreated:
        return cls.model_validate({**ApiKeyOut.model_validate(api_key).model_dump(), "key": key})


class ChatMessage(InputModel):
    role: Literal["system", "user", "assistant"]
    content: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_CHARS)]


class PromptIn(InputModel):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    tags: Annotated[list[Tag], Field(max_length=MAX_TAGS)] = []
    source: Annotated[str, StringConstraints(max_length=200)] = ""
    split: PromptSplit = PromptSplit.TRAIN

    @field_validator("messages")
    @classmethod
    def _ends_with_user_turn(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user":
            raise ValueError("the last message must be a user turn")
        return messages


class SkippedRow(BaseModel):
    line: int
    """The line in JSON Lines and CSV files; the item's place in the list (from 1) in JSON."""
    reason: str


class PromptImportOptions(InputModel):
    """What an import does to every row: adds tags, and replaces the split and source if given."""

    tags: Annotated[list[Tag], Field(max_length=MAX_TAGS)] = []
    split: PromptSplit | None = None
    source: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None


class PromptImportReport(BaseModel):
    file_format: str
    created: int
    created_ids: list[int] = []
    """The new prompts' ids in file order, for a script's next call (`/api/generations`)."""
    already_stored: int
    repeated_in_file: int
    skipped: list[SkippedRow]

    @computed_field
    @property
    def duplicates(self) -> int:
        """Valid rows not added because the same conversation is stored or came earlier."""
        return self.already_stored + self.repeated_in_file

    @property
    def row_name(self) -> str:
        """What `SkippedRow.line` counts in this file."""
        return "item" if self.file_format == "json" else "line"


class UserCreate(InputModel):
    username: Username
    password: Password
    role: Role


# --- rating ----------------------------------------------------------------------------------

MAX_TEXT_CHARS = 32_000
MAX_CRITIQUE_CHARS = 10_000
MAX_REASON_CHARS = 1_000
MAX_RESPONSES_PER_TASK = 4

Flag = Literal["unsafe", "factually_wrong", "off_topic", "broken"]
FLAGS: tuple[str, ...] = get_args(Flag)
Rating = Annotated[int, Field(ge=1, le=7)]
RankingEntry = (
    RowId | Annotated[list[RowId], Field(min_length=2, max_length=MAX_RESPONSES_PER_TASK)]
)


class MessageOut(BaseModel):
    role: str
    content: str


class PromptOut(BaseModel):
    id: int
    messages: list[MessageOut]


class ResponseOut(BaseModel):
    id: int
    text: str


class TaskOut(BaseModel):
    """A leased task as a rater sees it: responses in this rater's (randomised) order."""

    task_id: int
    prompt: PromptOut
    responses: list[ResponseOut]
    lease_expires_at: datetime


class TooManyLeasesOut(ErrorOut):
    """The 429 of `GET /api/tasks/next` while the caller holds as many tasks as they may."""

    held_task_ids: list[int]
    """The tasks the caller holds, oldest lease first: judge, skip or release one."""


class JudgementIn(InputModel):
    ranking: Annotated[list[RankingEntry], Field(min_length=1, max_length=MAX_RESPONSES_PER_TASK)]
    """Response ids best first; tied responses share an inner list."""
    strength: Annotated[int, Field(ge=1, le=3)] | None = None
    """For two responses: 1 slightly, 2 clearly, 3 much better."""
    all_bad: bool = False
    ratings: dict[RowId, dict[str, Rating]] | None = None
    critique: Annotated[str, StringConstraints(max_length=MAX_CRITIQUE_CHARS)] | None = None
    rewrite: Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)] | None = None
    rewrite_of: RowId | None = None
    """The response the rewrite started from and replaces; default: the top-ranked one."""
    flags: dict[RowId, Annotated[list[Flag], Field(max_length=len(FLAGS))]] | None = None
    time_spent_ms: Annotated[int, Field(ge=0, le=24 * 3600 * 1000)] | None = None
    guideline_version: RowId | None = None


class JudgementOut(BaseModel):
    id: int
    task_id: int
    created_at: datetime


class SkipIn(InputModel):
    reason: Annotated[str, StringConstraints(max_length=MAX_REASON_CHARS)] | None = None


class SkipOut(BaseModel):
    task_id: int
    status: Literal["skipped"] = "skipped"


# --- quality control -------------------------------------------------------------------------


class GoldIn(InputModel):
    ranking: Annotated[list[RankingEntry], Field(min_length=1, max_length=MAX_RESPONSES_PER_TASK)]
    """The known answer: the task's response ids best first, ties as inner lists."""


class GoldOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    is_gold: bool
    gold_ranking: list[RankingEntry] | None


class PauseIn(InputModel):
    reason: Annotated[
        str, StringConstraints(strip_whitespace=True, max_length=MAX_REASON_CHARS)
    ] = ""


class PauseOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    paused_at: datetime | None
    pause_reason: str | None


class RaterQualityOut(BaseModel):
    """One rater's stored quality figures (see `app.domain.quality` for their definitions)."""

    rater_id: int
    username: str
    paused: bool
    judgements: int
    consensus_tau: float | None
    consensus_tasks: int
    gold_answered: int
    gold_correct: int
    first_shown_rate: float | None
    median_seconds: float | None
    trust: float | None
    computed_at: datetime

    @computed_field
    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_answered if self.gold_answered else None

    @classmethod
    def of(cls, rater: User, figures: RaterQuality) -> RaterQualityOut:
        person = {"username": rater.username, "paused": rater.paused_at is not None}
        stored = {name: getattr(figures, name) for name in cls.model_fields.keys() - person}
        return cls(**stored, **person)


# --- background jobs -------------------------------------------------------------------------


class GenerationRequest(InputModel):
    """Candidate generation: sample responses for prompts and make rating tasks of them."""

    prompt_ids: Annotated[list[RowId], Field(min_length=1, max_length=10_000)] | None = None
    """Default: every training prompt without an open task."""
    per_prompt: Annotated[int, Field(ge=2, le=MAX_RESPONSES_PER_TASK)] = 2
    overlap: Annotated[int, Field(ge=1, le=20)] | None = None
    """Judgements each task needs; default from `ALIGNLOOP_DEFAULT_OVERLAP`."""
    model_versions: Annotated[list[str], Field(min_length=1, max_length=2)] | None = None
    """Default: the current policy, paired against its parent when it has one."""
    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    seed: Int64 | None = None


class JobAccepted(BaseModel):
    job_id: int


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    status: str
    progress: float
    progress_detail: str | None
    eta_seconds: float | None
    """Time left at the pace so far, while running."""
    params: dict
    result: dict
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


# --- training rounds ---------------------------------------------------------------------------


Scalar = Int64 | float | bool | str | None


class RoundRequest(InputModel):
    """A training round to queue; `overrides` change the preset's settings, per section
    (`snapshot`, `sft`, `reward_model`, `policy`, `evaluation`, `promotion`)."""

    algorithm: Algorithm = DEFAULT_ALGORITHM
    preset: Literal["quick", "standard"] = "quick"
    line: Annotated[str, StringConstraints(min_length=1, max_length=100)] = "main"
    overrides: dict[str, dict[str, Scalar]] = {}


class RoundAccepted(BaseModel):
    round_id: int


class HumanVerdictOut(BaseModel):
    """Raters' blind A/B verdicts: how often the new policy beat its parent (ties as half)."""

    win_rate: float
    low: float
    high: float
    """The 95% Wilson interval."""
    n: float


class RoundOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    line: str
    algorithm: str
    preset: str
    status: str
    stage: str
    progress: float
    """Of the current stage."""
    progress_detail: str | None
    stage_started_at: datetime | None
    eta_seconds: float | None
    """Time the current stage still needs at its pace so far, while running."""
    config: dict
    metrics: dict
    timings: dict
    error: str | None
    snapshot_sha256: str | None
    judgement_count: int | None
    rater_count: int | None
    parent_version_id: int | None
    reward_model_version: str | None = None
    policy_version: str | None = None
    human: HumanVerdictOut | None = None
    """The raters' blind A/B verdict on the new policy against its parent, once it exists."""
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, round_: object, human: object | None = None) -> RoundOut:
        out = cls.model_validate(round_)
        out.reward_model_version = out.metrics.get("reward_model", {}).get("version")
        out.policy_version = out.metrics.get("register", {}).get("version")
        if human is not None and human.n:
            out.human = HumanVerdictOut.model_validate(human, from_attributes=True)
        return out


class MetricPoint(BaseModel):
    stage: str
    step: int
    name: str
    value: float


class LogLine(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    stage: RoundStage
    level: str
    message: str
    created_at: datetime


# --- serving ---------------------------------------------------------------------------------


class FeedbackIn(InputModel):
    """Feedback on a served completion: thumbs up or down, a better answer, or both."""

    completion_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    choice_index: Annotated[int, Field(ge=0, le=7)] = 0
    rating: Literal["up", "down"] | None = None
    preferred: Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)] | None = None

    @model_validator(mode="after")
    def _says_something(self) -> FeedbackIn:
        if self.rating is None and not (self.preferred or "").strip():
            raise ValueError("give a rating, a preferred answer, or both")
        return self


class FeedbackOut(BaseModel):
    id: int
    prompt_id: int | None
    task_id: int | None


class ModelVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: str
    status: str
    parent_id: int | None
    round_id: int | None
    snapshot_sha256: str | None
    rater_count: int | None
    config: dict
    metrics: dict
    created_at: datetime
    promoted_at: datetime | None
    current: bool = False


class TrainingRequest(InputModel):
    """A reward model or an SFT policy trained from the collected data."""

    kind: Literal["reward_model", "sft"]
    base: Annotated[str, StringConstraints(max_length=100)] | None = None
    """The policy version to start from; default: the current one."""
    ties: Literal["skip", "half"] = "skip"
    """Reward model only: leave tied responses out, or train on them as 0.5 targets."""
    config: dict[str, Int64 | float | bool] = {}
    """Trainer settings (`RewardConfig` or `SFTConfig` fields) that differ from the defaults."""


# --- user management -----------------------------------------------------------------------------


class UserAccountOut(UserOut):
    """An account as admins see it: whether it may sign in, whether it gets tasks, activity."""

    is_active: bool
    paused_at: datetime | None
    created_at: datetime
    last_login_at: datetime | None


class UserUpdate(InputModel):
    is_active: bool | None = None
    role: Role | None = None


InvitationNote = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]


class InvitationCreate(InputModel):
    role: Role
    note: InvitationNote = ""


class InvitationOut(BaseModel):
    """A pending invitation; its token is never stored, so it cannot be listed."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    role: Role
    note: str
    created_by_id: int | None
    created_at: datetime
    expires_at: datetime


class LinkIssued(BaseModel):
    url: str = Field(description="The one-time link; shown this once and never again.")
    expires_at: datetime


class InvitationIssued(LinkIssued):
    id: int


class PasswordForm(InputModel):
    """A new password, typed twice (the invitation and password-reset pages)."""

    password: Password
    password_again: str

    @model_validator(mode="after")
    def _typed_alike_twice(self) -> PasswordForm:
        if self.password != self.password_again:
            raise ValueError("the two passwords differ")
        return self


class AccountForm(PasswordForm):
    username: Username


FormT = TypeVar("FormT", bound=BaseModel)


def form_input(model: type[FormT], **fields: object) -> FormT:
    """Form fields checked as `model`; the first problem becomes `InvalidInput` naming its field."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = error["msg"].removeprefix("Value error, ")
        where = ".".join(str(part) for part in error["loc"])
        raise InvalidInput(f"{where}: {message}" if where else message) from None
