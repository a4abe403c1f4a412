"""The tables: every row alignloop stores, and the constraints that keep the rows consistent.

Enumerations are stored as strings with CHECK constraints (not native PostgreSQL enums) so that
one migration works on SQLite and PostgreSQL alike and adding a value never needs `ALTER TYPE`.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from app.round_config import RoundConfig

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONValue = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


MIN_PROGRESS_FOR_ETA = 0.02


def remaining_seconds(started_at: datetime | None, fraction: float) -> float | None:
    """Time left for work `fraction` done since `started_at`, at its pace so far (None until
    the pace means something)."""
    if started_at is None or not MIN_PROGRESS_FOR_ETA <= fraction < 1.0:
        return None
    elapsed = (utcnow() - started_at).total_seconds()
    return max(0.0, elapsed * (1.0 - fraction) / fraction)


def without_nul(text: str) -> str:
    """Model output as PostgreSQL can store it: text columns and JSONB refuse NUL characters,
    which a model may emit (people's input with NUL is refused at the door instead)."""
    return text.replace("\x00", "")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the backend stores."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def string_enum(enum_class: type[enum.StrEnum]) -> Enum:
    return Enum(
        enum_class,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [member.value for member in members],
        name=enum_class.__name__.lower(),
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONValue, list[Any]: JSONValue}


class Role(enum.StrEnum):
    RATER = "rater"
    ADMIN = "admin"


class KeyScope(enum.StrEnum):
    """What an API key may be used for, in increasing power: each scope includes the ones
    before it. A key never does more than its owner's role allows, whatever its scope."""

    INFERENCE = "inference"
    """`/v1` only: for keys pasted into OpenAI clients, the kind most likely to leak."""
    RATER = "rater"
    """What a rater may do: tasks, judgements, their own keys; and `/v1`."""
    ADMIN = "admin"
    """Everything, for an admin."""

    @classmethod
    def of_role(cls, role: Role) -> KeyScope:
        """The scope that carries all of `role`'s power."""
        return cls(role.value)

    @classmethod
    def up_to(cls, limit: KeyScope) -> list[KeyScope]:
        """The scopes that `limit` includes, least first."""
        return [scope for scope in cls if scope.within(limit)]

    def within(self, limit: KeyScope) -> bool:
        members = list(KeyScope)
        return members.index(self) <= members.index(limit)

    def narrowed_to(self, limit: KeyScope) -> KeyScope:
        """The lesser of this scope and `limit`."""
        return self if self.within(limit) else limit


class ModelKind(enum.StrEnum):
    POLICY = "policy"
    REWARD = "reward"


class ModelStatus(enum.StrEnum):
    TRAINING = "training"
    READY = "ready"
    FAILED = "failed"
    ARCHIVED = "archived"


class PromptSplit(enum.StrEnum):
    TRAIN = "train"
    EVAL = "eval"


class TaskKind(enum.StrEnum):
    COMPARE = "compare"
    AB_EVAL = "ab_eval"


class TaskStatus(enum.StrEnum):
    OPEN = "open"
    COMPLETE = "complete"
    RETIRED = "retired"


class AssignmentStatus(enum.StrEnum):
    ACTIVE = "active"
    SUBMITTED = "submitted"
    SKIPPED = "skipped"
    EXPIRED = "expired"


class RunStatus(enum.StrEnum):
    """Lifecycle shared by background jobs and training rounds."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Algorithm(enum.StrEnum):
    PPO = "ppo"
    RLOO = "rloo"
    DPO = "dpo"


DEFAULT_ALGORITHM = Algorithm.DPO
"""What a round runs unless told otherwise: offline DPO on the raters' pairs reached the highest
win rate of the settings tried in bench/alignment_study.py, and two `quick` rounds of it 0.75 in
bench/alignment.py (bench/RESULTS.md); it needs no sampling while it trains."""


class LinkPurpose(enum.StrEnum):
    INVITATION = "invitation"
    PASSWORD_RESET = "password_reset"


class RoundStage(enum.StrEnum):
    PENDING = "pending"
    SNAPSHOT = "snapshot"
    SFT = "sft"
    REWARD_MODEL = "reward_model"
    POLICY = "policy"
    EVALUATE = "evaluate"
    REGISTER = "register"
    DONE = "done"


# --- people and credentials -------------------------------------------------------------------


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    """Stored lower-cased, so that `Alice` and `alice` are one account."""
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(string_enum(Role))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    locale: Mapped[str] = mapped_column(String(8), default="en")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    paused_at: Mapped[datetime | None]
    """A paused rater can sign in but gets no tasks (set by an admin or by the trust score)."""
    pause_reason: Mapped[str | None] = mapped_column(Text)

    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="user", passive_deletes=True)


class WebSession(Base):
    """A browser login. The cookie holds a random token; only its hash is stored."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)

    user: Mapped[User] = relationship()


class ApiKey(Base):
    """A bearer credential for scripts. Shown once at creation; only its hash is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    """The key's first characters, so that owners can tell their keys apart in lists."""
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    """Set for tokens from `POST /api/auth/token`; keys made on purpose do not expire."""
    scope: Mapped[KeyScope] = mapped_column(string_enum(KeyScope))
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="api_keys")


class AccessLink(Base):
    """A one-time link an admin hands out: an invitation to create an account with a role, or a
    password reset for one user. The URL holds a random token; only its hash is stored."""

    __tablename__ = "access_links"
    __table_args__ = (
        CheckConstraint(
            "(purpose = 'invitation' AND role IS NOT NULL) OR "
            "(purpose = 'password_reset' AND user_id IS NOT NULL)",
            name="purpose_has_its_target",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    purpose: Mapped[LinkPurpose] = mapped_column(string_enum(LinkPurpose))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role | None] = mapped_column(string_enum(Role))
    """The role an invitation grants."""
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    """The account a reset is for, or the account an invitation created."""
    note: Mapped[str] = mapped_column(String(200), default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class LoginThrottle(Base):
    """A counter of failed logins or invalid API keys (per account, address, or both; see
    `app.web.throttles`), for 429s after repeated failures."""

    __tablename__ = "login_throttles"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    failures: Mapped[int] = mapped_column(default=0)
    window_started_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None]


# --- prompts, models and responses ------------------------------------------------------------


class Prompt(Base):
    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(primary_key=True)
    messages: Mapped[list[Any]]
    """Chat messages `[{"role", "content"}, ...]` ending with a user turn."""
    source: Mapped[str] = mapped_column(String(200), default="")
    tags: Mapped[list[Any]] = mapped_column(default=list)
    split: Mapped[PromptSplit] = mapped_column(string_enum(PromptSplit), default=PromptSplit.TRAIN)
    dedup_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """A trained (or imported) model in the store, with its lineage."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[ModelKind] = mapped_column(string_enum(ModelKind))
    status: Mapped[ModelStatus] = mapped_column(string_enum(ModelStatus))
    path: Mapped[str] = mapped_column(String(500))
    """Folder relative to the model store; never taken from user input."""
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id", use_alter=True))
    snapshot_sha256: Mapped[str | None] = mapped_column(String(64))
    rater_count: Mapped[int | None]
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    promoted_at: Mapped[datetime | None]

    parent: Mapped[ModelVersion | None] = relationship(remote_side=[id])


class Response(Base):
    """One answer to a prompt, written by a model version or by a person (a rewrite)."""

    __tablename__ = "responses"
    __table_args__ = (
        CheckConstraint("model_version_id IS NULL OR author_id IS NULL", name="one_author_at_most"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    text: Mapped[str] = mapped_column(Text)
    generation_params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @validates("text")
    def _storable_text(self, _key: str, text: str) -> str:
        return without_nul(text)


# --- rating ------------------------------------------------------------------------------------


class Job(Base):
    """A background job (such as candidate generation); the database, not the broker, owns it."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(50))
    status: Mapped[RunStatus] = mapped_column(string_enum(RunStatus), default=RunStatus.QUEUED)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress_detail: Mapped[str | None] = mapped_column(String(200))
    """What the job is doing, in words ("96 of 224 answers")."""
    attempts: Mapped[int] = mapped_column(default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    dispatched_at: Mapped[datetime | None]
    """When a message for this job last went to the broker (a job may need re-sending)."""
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_jobs_status", "status"),)

    @property
    def eta_seconds(self) -> float | None:
        """The time the running job still needs, at its pace so far."""
        if self.status != RunStatus.RUNNING:
            return None
        return remaining_seconds(self.started_at, self.progress)

    @property
    def duration_seconds(self) -> float | None:
        """How long the job ran, or has run so far while it runs; None when it never started
        (or waits in the queue again after losing its worker)."""
        if self.started_at is None or (
            self.finished_at is None and self.status != RunStatus.RUNNING
        ):
            return None
        return ((self.finished_at or utcnow()) - self.started_at).total_seconds()


class Task(Base):
    """A prompt with 2..k responses for raters to compare, judged `required_judgements` times."""

    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint("required_judgements >= 1", name="required_judgements_positive"),
        CheckConstraint("judgement_count >= 0 AND lease_count >= 0", name="counts_not_negative"),
        Index("ix_tasks_status", "status"),
        # The order in which `app.domain.assignment` hands out open tasks: fewest free slots first.
        Index(
            "ix_tasks_open_by_free_slots",
            text("(required_judgements - judgement_count - lease_count)"),
            "id",
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[TaskKind] = mapped_column(string_enum(TaskKind), default=TaskKind.COMPARE)
    status: Mapped[TaskStatus] = mapped_column(string_enum(TaskStatus), default=TaskStatus.OPEN)
    required_judgements: Mapped[int] = mapped_column(default=3)
    judgement_count: Mapped[int] = mapped_column(default=0, server_default="0")
    """Original judgements so far (corrections do not count)."""
    lease_count: Mapped[int] = mapped_column(default=0, server_default="0")
    """Assignments still marked active, expired or not: a slot frees when its lease is
    reclaimed. Kept on the row so that a locked task can be re-checked without counting."""
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    gold_ranking: Mapped[list[Any] | None]
    """A gold task's known answer (a ranking); gold tasks measure raters and stay out of
    snapshots."""
    extra_judgements: Mapped[int] = mapped_column(default=0, server_default="0")
    """Raters added to `required_judgements` because the first ones disagreed."""
    generation_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]

    responses: Mapped[list[TaskResponse]] = relationship(
        order_by="TaskResponse.position", cascade="all, delete-orphan", passive_deletes=True
    )


class TaskResponse(Base):
    __tablename__ = "task_responses"
    __table_args__ = (UniqueConstraint("task_id", "position"),)

    task_id: Mapped[int] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id"), primary_key=True)
    position: Mapped[int]

    response: Mapped[Response] = relationship()


class GuidelineVersion(Base):
    """One published version of the rating guidelines (Markdown)."""

    __tablename__ = "guideline_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(unique=True)
    body: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Assignment(Base):
    """A rater's lease on one task slot, with the response order that rater was shown."""

    __tablename__ = "assignments"
    __table_args__ = (
        # One live lease per (task, rater); finished and expired leases stay as history.
        Index(
            "uq_assignments_live_lease",
            "task_id",
            "rater_id",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
        Index("ix_assignments_rater_status", "rater_id", "status"),
        Index("ix_assignments_task_status", "task_id", "status"),
        Index("ix_assignments_status_expires", "status", "expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[AssignmentStatus] = mapped_column(
        string_enum(AssignmentStatus), default=AssignmentStatus.ACTIVE
    )
    response_order: Mapped[list[Any]]
    """Response ids in the order this rater saw them (for position-bias measurement)."""
    leased_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    skip_reason: Mapped[str | None] = mapped_column(Text)


class Judgement(Base):
    """A rater's verdict on a task. Append-only: a correction is a new row that supersedes one."""

    __tablename__ = "judgements"
    __table_args__ = (
        # One original judgement per (task, rater); corrections chain through `supersedes_id`.
        Index(
            "uq_judgements_task_rater_original",
            "task_id",
            "rater_id",
            unique=True,
            sqlite_where=text("supersedes_id IS NULL"),
            postgresql_where=text("supersedes_id IS NULL"),
        ),
        UniqueConstraint("rater_id", "idempotency_key"),
        Index("ix_judgements_created_at", "created_at"),
        Index("ix_judgements_rater_created", "rater_id", "created_at"),
        Index("ix_judgements_task_id", "task_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    assignment_id: Mapped[int | None] = mapped_column(ForeignKey("assignments.id"))
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("judgements.id"), unique=True)
    ranking: Mapped[list[Any]]
    """Response ids best first; tied responses share an inner list: `[3, [1, 2]]`."""
    ratings: Mapped[dict[str, Any] | None]
    """Optional `{response_id: {aspect: 1..7}}`."""
    strength: Mapped[int | None]
    """How strongly the top choice is preferred, on the two-response scale."""
    critique: Mapped[str | None] = mapped_column(Text)
    rewrite_response_id: Mapped[int | None] = mapped_column(ForeignKey("responses.id"))
    all_bad: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """The rater found no response acceptable (the ranking then says which is least bad)."""
    flags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """`{response_id: ["unsafe", "factually_wrong", "off_topic", "broken"]}`."""
    time_spent_ms: Mapped[int | None]
    guideline_version_id: Mapped[int | None] = mapped_column(ForeignKey("guideline_versions.id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    """The hash of the submitted body: a retry under `idempotency_key` must repeat it."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- quality control ---------------------------------------------------------------------------


class RaterQuality(Base):
    """One rater's quality figures, recomputed in the background so that pages read one row."""

    __tablename__ = "rater_quality"

    rater_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    judgements: Mapped[int] = mapped_column(default=0)
    consensus_tau: Mapped[float | None] = mapped_column(Float)
    """Mean Kendall tau-b between the rater's rankings and the other raters' consensus."""
    consensus_tasks: Mapped[int] = mapped_column(default=0)
    gold_answered: Mapped[int] = mapped_column(default=0)
    gold_correct: Mapped[int] = mapped_column(default=0)
    first_shown_rate: Mapped[float | None] = mapped_column(Float)
    """How often the rater put whichever response was shown first on top (0.5 is unbiased
    with two responses)."""
    median_seconds: Mapped[float | None] = mapped_column(Float)
    trust: Mapped[float | None] = mapped_column(Float)
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)


class QualityReport(Base):
    """The agreement report at one moment (Krippendorff's alpha overall, per aspect, per tag)."""

    __tablename__ = "quality_reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    report: Mapped[dict[str, Any]]
    computed_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class StoredLeaderboard(Base):
    """The Bradley-Terry leaderboard at one moment, so that the models page reads one row."""

    __tablename__ = "leaderboards"

    id: Mapped[int] = mapped_column(primary_key=True)
    standings: Mapped[list[Any]]
    computed_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


# --- training ----------------------------------------------------------------------------------


class Round(Base):
    """One training round: snapshot, reward model, policy optimisation, evaluation, register."""

    __tablename__ = "rounds"
    __table_args__ = (
        Index("ix_rounds_line_status", "line", "status"),
        # At most one queued or running round per line, enforced where no race can pass it.
        Index(
            "uq_rounds_one_active_per_line",
            "line",
            unique=True,
            sqlite_where=text("status IN ('queued', 'running')"),
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    line: Mapped[str] = mapped_column(String(100), default="main")
    """The model line this round trains; at most one round runs per line."""
    algorithm: Mapped[Algorithm] = mapped_column(string_enum(Algorithm), default=Algorithm.PPO)
    preset: Mapped[str] = mapped_column(String(32), default="quick")
    status: Mapped[RunStatus] = mapped_column(string_enum(RunStatus), default=RunStatus.QUEUED)
    stage: Mapped[RoundStage] = mapped_column(string_enum(RoundStage), default=RoundStage.PENDING)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    """Of the current stage."""
    progress_detail: Mapped[str | None] = mapped_column(String(200))
    """What the stage is doing, in words ("step 3 of 8")."""
    stage_started_at: Mapped[datetime | None]
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    parent_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    snapshot_sha256: Mapped[str | None] = mapped_column(String(64))
    judgement_count: Mapped[int | None]
    rater_count: Mapped[int | None]
    attempts: Mapped[int] = mapped_column(default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    @property
    def eta_seconds(self) -> float | None:
        """The time the running stage still needs, at its pace so far."""
        if self.status != RunStatus.RUNNING:
            return None
        return remaining_seconds(self.stage_started_at, self.progress)

    def parsed_config(self, *, device: str = "auto", policy_seed: int = 0) -> RoundConfig:
        """`config` as typed sections (see `RoundConfig.parse`)."""
        return RoundConfig.parse(
            self.algorithm, self.config, device=device, policy_seed=policy_seed
        )


class RoundMetric(Base):
    """One point of a training curve."""

    __tablename__ = "round_metrics"
    __table_args__ = (Index("ix_round_metrics_round_name_step", "round_id", "name", "step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"))
    stage: Mapped[RoundStage] = mapped_column(string_enum(RoundStage))
    step: Mapped[int]
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)


class RoundLog(Base):
    """One line of a round's log: stage starts and ends, the trainers' messages, errors."""

    __tablename__ = "round_logs"
    __table_args__ = (Index("ix_round_logs_round_id_id", "round_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"))
    stage: Mapped[RoundStage] = mapped_column(string_enum(RoundStage))
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- serving -----------------------------------------------------------------------------------


class FeedbackRating(enum.StrEnum):
    UP = "up"
    DOWN = "down"


class ServedCompletion(Base):
    """One `/v1/chat/completions` answer, kept so that feedback on it can become rating material."""

    __tablename__ = "served_completions"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(64), unique=True)
    """The `chatcmpl-...` id clients see."""
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    messages: Mapped[list[Any]]
    choices: Mapped[list[Any]]
    """`[{"text", "finish_reason"}]`, one per choice."""
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prompt_tokens: Mapped[int]
    completion_tokens: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @validates("choices")
    def _storable_choices(self, _key: str, choices: list[Any]) -> list[Any]:
        return [{**choice, "text": without_nul(choice["text"])} for choice in choices]


class Feedback(Base):
    """A client's verdict on a served completion: thumbs up or down, or a better answer."""

    __tablename__ = "feedback"
    __table_args__ = (
        CheckConstraint("rating IS NOT NULL OR preferred_text IS NOT NULL", name="says_something"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    completion_id: Mapped[int] = mapped_column(
        ForeignKey("served_completions.id", ondelete="CASCADE"), index=True
    )
    choice_index: Mapped[int] = mapped_column(default=0)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    rating: Mapped[FeedbackRating | None] = mapped_column(string_enum(FeedbackRating))
    preferred_text: Mapped[str | None] = mapped_column(Text)
    prompt_id: Mapped[int | None] = mapped_column(ForeignKey("prompts.id", ondelete="SET NULL"))
    """The conversation, added to the prompt pool for the next candidate generation."""
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"))
    """With a preferred text: the task in which raters compare it with the served answer."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
