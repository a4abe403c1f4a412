"""Runtime configuration: the one Settings class, and the only code that reads the environment.

Every setting comes from an `ALIGNLOOP_`-prefixed environment variable (or `.env`); the rest of
the code receives a `Settings` object and never looks at `os.environ` itself.
"""

from __future__ import annotations

import ipaddress
import math
import os
import secrets
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values that appear in tutorials and templates; a deployment that still has one is misconfigured.
PLACEHOLDER_SECRETS = {
    "changeme",
    "change-me",
    "changethis",
    "secret",
    "dev",
    "development",
    "test",
}
MIN_SECRET_LENGTH = 32
MIN_SECRET_BITS = 80
"""A key's estimated entropy must reach this: `secrets.token_urlsafe(32)` estimates about 200
bits, 32 random hex digits 117 on average (96 at the least in 10,000 draws); a repeated word or
a run of one character estimates far below."""
BUNDLED_MODEL = "bundled"
TINY_RANDOM_MODEL = "tiny-random"


def estimated_entropy_bits(secret: str) -> float:
    """Length times the Shannon entropy of the secret's characters, zero for a repetition of a
    shorter string: a cheap upper estimate that still catches `aaaa…` and `passwordpassword…`."""
    if (secret + secret).find(secret, 1) < len(secret):
        return 0.0
    counts = Counter(secret)
    return -sum(count * math.log2(count / len(secret)) for count in counts.values())


CGROUP_MEMORY_LIMIT = Path("/sys/fs/cgroup/memory.max")


def machine_memory_bytes() -> int:
    """This machine's RAM, or the container's memory limit when that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = CGROUP_MEMORY_LIMIT.read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


class ConfigurationError(RuntimeError):
    """The configuration cannot run the requested process; the message says what to set."""


class Settings(BaseSettings):
    """Everything an operator can configure. Field names map to `ALIGNLOOP_<NAME>`."""

    model_config = SettingsConfigDict(
        env_prefix="ALIGNLOOP_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,  # `ALIGNLOOP_REDIS_URL=` means unset, as compose files write it
        extra="ignore",
    )

    data_dir: Path = Path("data")
    """Folder for the SQLite database, the model store and the generated secret key."""
    database_url: str | None = None
    """SQLAlchemy URL; unset means a SQLite file inside `data_dir`."""
    database_pool_size: int = Field(default=40, ge=1)
    """PostgreSQL connections each process keeps open: the web tier runs up to 40 requests at
    once. Keep replicas x pool size under the server's max_connections."""
    redis_url: str | None = None
    """Celery broker and result backend; unset means embedded mode (worker inside the process)."""
    base_model: str = BUNDLED_MODEL
    """`bundled` (SmolLM2-135M-Instruct), `tiny-random`, a Hugging Face id or a local folder."""
    base_model_revision: str | None = Field(default=None, max_length=200)
    """For a Hugging Face id: the commit (or a branch or tag, resolved to its commit when the
    model is first pulled) to download. Unset: the commit `main` points at then."""
    secret_key: SecretStr | None = None
    """Signs login-form and invitation tokens; required by the web process outside dev mode."""
    dev_mode: bool = False
    """Accept placeholder secrets; never set this on a server that others can reach."""
    device: Literal["auto", "cpu", "cuda"] | str = "auto"
    """`auto` picks CUDA when present, else CPU; or any torch device string such as `cuda:1`."""
    inference: Literal["local", "celery", "openai"] = "local"
    """Where `/v1` and playground generations run: in the web process, on workers via the
    `inference` queue, or on an external OpenAI-compatible server (`inference_url`)."""
    inference_url: str | None = None
    """With `inference: openai`, the server's API base (`http://gpu-host:8000/v1`): vLLM,
    SGLang, TGI or another alignloop, serving each model version under its own name."""
    inference_api_key: SecretStr | None = None
    """With `inference: openai`, the bearer key the server expects, if any."""

    session_hours: float = Field(default=12.0, gt=0)
    """How long a browser session stays valid after login."""
    login_max_failures: int = Field(default=5, ge=1)
    """Failed logins per username and client address before further attempts get 429."""
    login_lockout_seconds: int = Field(default=900, ge=1)
    """How long the login throttle lasts once tripped."""
    login_account_max_failures: int = Field(default=100, ge=1)
    """Failed logins per account within `throttle_window_seconds`, from any addresses, before
    every login to it (the right password too) gets 429 for a window: guessing spread over many
    addresses gets no further (AUTH-03: at most 100 an hour). Anyone can trip it for any
    username; signed-in sessions and API keys keep working meanwhile."""
    login_address_max_failures: int = Field(default=50, ge=1)
    """Failed logins per client address within the window, whatever the usernames (password
    spraying); an office of people mistyping behind one address stays well under it."""
    api_key_max_failures: int = Field(default=50, ge=1)
    """Requests with an invalid, expired or revoked bearer key per client address within the
    window before every bearer request from that address (valid keys too) gets 429."""
    throttle_window_seconds: int = Field(default=3600, ge=1)
    """The window of the three limits above, and how long each locks once reached."""
    trusted_proxies: str = ""
    """Comma-separated addresses or networks (CIDR) of the reverse proxies whose
    `X-Forwarded-For` and `X-Forwarded-Proto` are believed; empty believes no one, so the
    client address (which the throttles count by) is the connection's peer."""
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    """Largest request body the web tier accepts (413 beyond)."""
    log_level: str = "INFO"

    lease_minutes: float = Field(default=30.0, gt=0)
    """How long a rater holds a task before it goes back to the pool."""
    max_open_leases: int = Field(default=4, ge=1)
    """Tasks one rater may hold at once (429 beyond)."""
    default_overlap: int = Field(default=3, ge=1, le=20)
    """Judgements each new task needs from different raters."""
    rating_aspects: str = "helpfulness,harmlessness,honesty"
    """Comma-separated aspects that raters score from 1 to 7 per response."""
    max_new_tokens: int = Field(default=256, ge=1, le=4096)
    """Length limit of candidate responses."""
    demo_prompts: bool = True
    """`alignloop run` loads the shipped demo prompts into an empty database; switch it off
    to start with your own prompts only."""
    v1_max_concurrent_per_key: int = Field(default=32, ge=1)
    """`/v1` requests one API key may have running at once (429 beyond)."""
    v1_requests_per_minute: int = Field(default=600, ge=1)
    """`/v1` requests one API key may start per minute (429 beyond)."""
    v1_slot_lease_seconds: int = Field(default=900, ge=1)
    """With Redis: how long a running `/v1` request counts against its key's concurrency cap at
    most. A web process that dies mid-request cannot release its slots; they end after this."""
    generation_interval_hours: float = Field(default=0.0, ge=0)
    """Generate candidates for prompts without open tasks this often; 0 switches it off."""
    round_interval_hours: float = Field(default=0.0, ge=0)
    """Start a training round this often (unless one is running); 0 switches it off."""
    round_after_judgements: int = Field(default=0, ge=0)
    """Start a training round once this many judgements arrived after the last round's
    snapshot; 0 switches it off."""
    round_algorithm: Literal["ppo", "rloo", "dpo"] = "dpo"  # app.models.DEFAULT_ALGORITHM
    """The algorithm of scheduled rounds."""
    round_preset: Literal["quick", "standard"] = "quick"
    """The preset of scheduled rounds."""

    worker_memory_gb: float | None = Field(default=None, gt=0)
    """Memory one generation or training process may use, in GiB, before it is stopped and its
    job or round fails; unset means half of this machine's RAM (or of the container's limit)."""
    worker_stall_minutes: float = Field(default=30.0, gt=0)
    """A generation or training process that reports no progress for this long is stopped."""
    train_processes: int = Field(default=0, ge=0)
    """Processes a round's reward model and DPO stages train in, data parallel (under
    torchrun); 0 means one per visible GPU, or one on a machine without."""

    gold_rate: float = Field(default=0.1, ge=0, le=1)
    """Share of the tasks handed to a rater that are gold tasks (known answers), while the rater
    has gold tasks left to do."""
    low_agreement_threshold: float = Field(default=0.5, ge=0, le=1)
    """A completed task whose raters agree on fewer of its pairs than this gets one more rater."""
    max_extra_judgements: int = Field(default=2, ge=0, le=20)
    """Raters added to one task for low agreement, at most."""
    trust_min_judgements: int = Field(default=20, ge=1)
    """Judgements a rater needs before their trust score counts (for weights and pausing)."""
    trust_pause_below: float = Field(default=0.0, ge=0, le=1)
    """Pause raters whose trust score falls below this; 0 switches automatic pausing off."""
    invitation_hours: float = Field(default=72.0, gt=0)
    """How long an invitation link stays valid."""
    password_reset_hours: float = Field(default=24.0, gt=0)
    """How long a password-reset link stays valid."""

    @model_validator(mode="after")
    def _external_inference_has_a_server(self) -> Settings:
        if self.inference == "openai" and not self.inference_url:
            raise ValueError("ALIGNLOOP_INFERENCE=openai needs ALIGNLOOP_INFERENCE_URL")
        return self

    @model_validator(mode="after")
    def _secret_key_is_not_a_placeholder(self) -> Settings:
        if self.secret_key is None or self.dev_mode:
            return self
        raw = self.secret_key.get_secret_value()
        if (
            raw.strip().lower() in PLACEHOLDER_SECRETS
            or len(raw) < MIN_SECRET_LENGTH
            or estimated_entropy_bits(raw) < MIN_SECRET_BITS
        ):
            raise ValueError(
                f"ALIGNLOOP_SECRET_KEY is a placeholder, shorter than {MIN_SECRET_LENGTH} "
                "characters or too predictable (a repeated word or pattern); generate one "
                'with: python -c "import secrets; print(secrets.token_urlsafe(48))"'
            )
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies_are_addresses(cls, value: str) -> str:
        """uvicorn takes anything that is no address for a literal name, so a typo would
        silently trust no one (or the wrong host): refuse it here instead."""
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"ALIGNLOOP_TRUSTED_PROXIES: {entry!r} is not an IP address or network"
                ) from None
        return ",".join(entries)

    @property
    def longest_throttle_window(self) -> timedelta:
        """How long a failure counter matters at most (older unlocked ones can be purged)."""
        return timedelta(seconds=max(self.login_lockout_seconds, self.throttle_window_seconds))

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'alignloop.db').resolve()}"

    @property
    def embedded(self) -> bool:
        """No broker configured: the worker and scheduler run inside `alignloop run`."""
        return not self.redis_url

    @property
    def worker_memory_bytes(self) -> int:
        if self.worker_memory_gb is not None:
            return int(self.worker_memory_gb * 2**30)
        return machine_memory_bytes() // 2

    @property
    def aspects(self) -> list[str]:
        return [aspect.strip() for aspect in self.rating_aspects.split(",") if aspect.strip()]

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def snapshots_dir(self) -> Path:
        return self.data_dir / "snapshots"

    @property
    def secret_key_file(self) -> Path:
        return self.data_dir / "secret_key"

    def require_secret_key(self) -> str:
        if self.secret_key is None:
            raise ConfigurationError(
                "ALIGNLOOP_SECRET_KEY is not set. Set it to a long random string "
                "(`alignloop run` generates one into the data folder for you)."
            )
        return self.secret_key.get_secret_value()

    def with_generated_secret_key(self) -> Settings:
        """Settings whose secret key is read from, or first created in, `data_dir/secret_key`.

        Used by the embedded default so that a fresh install is secure without any setup.
        """
        if self.secret_key is not None:
            return self
        path = self.secret_key_file
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(48))
        return self.model_copy(update={"secret_key": SecretStr(path.read_text().strip())})
