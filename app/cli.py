"""The `alignloop` command line: the embedded default, the production processes and admin chores.

Every command reads its configuration from `Settings` and reports problems as a one-line
message with a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session, sessionmaker

from app import broker, cli_reports, migrate, round_config
from app.config import ConfigurationError, Settings
from app.db import engine_for, make_session_factory, session_scope
from app.domain import access_links, accounts, bootstrap, jobs, model_registry, rounds
from app.domain.dashboard import queue_health
from app.domain.export import FORMATS, export_lines
from app.domain.prompt_import import import_prompts, options_from_text
from app.errors import AppError, NotFound
from app.models import (
    DEFAULT_ALGORITHM,
    Algorithm,
    KeyScope,
    ModelKind,
    PromptSplit,
    Role,
    RunStatus,
    User,
)
from app.schemas import USERNAME_RULE, InvitationNote, Password, Username
from app.tasks_contract import PULL_BASE_MODEL, QUEUES, RECLAIM
from app.web import throttles
from app.web.query_credentials import RedactQueryCredentials

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger("alignloop")
T = TypeVar("T")


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(error["msg"].removeprefix("Value error, ") for error in exc.errors())
        raise click.ClickException(f"configuration: {problems}") from None


def _session_factory(settings: Settings) -> sessionmaker[Session]:
    return make_session_factory(engine_for(settings))


def _validated(annotation: object, value: str, what: str) -> str:
    try:
        return TypeAdapter(annotation).validate_python(value)
    except ValidationError as exc:
        raise click.BadParameter(exc.errors()[0]["msg"], param_hint=what) from None


class AlignloopGroup(click.Group):
    """Turns the app's own errors into clean CLI messages."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (AppError, ConfigurationError) as exc:
            raise click.ClickException(getattr(exc, "detail", None) or str(exc)) from None


@click.group(cls=AlignloopGroup)
@click.version_option(package_name="alignloop", prog_name="alignloop")  # importlib.metadata's
@click.option("--log-level", default=None, help="Override ALIGNLOOP_LOG_LEVEL.")
@click.pass_context
def main(ctx: click.Context, log_level: str | None) -> None:
    """alignloop: collect human preferences, train on them, serve the aligned model."""
    settings = load_settings()
    logging.basicConfig(
        level=(log_level or settings.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if logging.getLogger().level > logging.DEBUG:
        # A line per migration at every first start buries what matters (the admin password).
        logging.getLogger("alembic").setLevel(logging.WARNING)
    ctx.obj = settings


# --- processes ---------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.pass_obj
def run(settings: Settings, host: str, port: int) -> None:
    """Everything in one process: migrate, first admin, demo prompts, web, worker, scheduler."""
    import uvicorn

    from app.web.main import create_app
    from worker.celery_app import create_celery
    from worker.embedded import EmbeddedWorker
    from worker.model_store import remove_abandoned_writes

    if not settings.embedded:
        raise click.ClickException(
            "`alignloop run` is the embedded default; unset ALIGNLOOP_REDIS_URL, or start "
            "`alignloop web`, `alignloop worker` and `alignloop beat` separately"
        )
    settings = settings.with_generated_secret_key()
    engine = engine_for(settings)
    migrate.upgrade(engine)
    with session_scope(make_session_factory(engine)) as db:
        admin_password = bootstrap.create_first_admin(db)
        demo_prompts = bootstrap.load_demo_prompts(db) if settings.demo_prompts else 0
        bootstrap.publish_default_guidelines(db)
    remove_abandoned_writes(settings.models_dir)
    celery = create_celery(settings, engine=engine)
    # The app imports torch and transformers; do it before worker threads start importing the
    # same modules (transformers' lazy imports are not safe to race).
    app = create_app(settings, engine=engine, celery=celery)
    # Before the worker's threads log or the model's conversion draws progress bars: nothing
    # comes between the lines of the password's box.
    _print_welcome(host, port, admin_password, demo_prompts)
    with EmbeddedWorker(celery):
        # the first start converts the base model meanwhile
        broker.send_task(celery, PULL_BASE_MODEL)
        # Jobs queued before a restart lived in memory only: send them again.
        broker.send_task(celery, RECLAIM, kwargs={"after_restart": True})
        uvicorn.run(app, host=host, port=port, **uvicorn_options(settings))


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What `run` and `web` tell uvicorn besides where to listen: the log level, an access log
    that redacts credentials in query strings, and whose `X-Forwarded-For` to believe. uvicorn
    would believe 127.0.0.1 by default, letting anything on this machine (or a proxy that
    passes the header through) pick the address that the throttles count by; here it believes
    only `ALIGNLOOP_TRUSTED_PROXIES`, and nobody while that is empty."""
    from uvicorn.config import LOGGING_CONFIG

    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["filters"] = {"redact_credentials": {"()": RedactQueryCredentials}}
    log_config["loggers"]["uvicorn.access"]["filters"] = ["redact_credentials"]
    return {
        "log_level": settings.log_level.lower(),
        "log_config": log_config,
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": settings.trusted_proxies,
    }


def _print_welcome(host: str, port: int, admin_password: str | None, demo_prompts: int) -> None:
    click.echo(f"\n  alignloop is starting at http://{host}:{port}/\n")
    if admin_password:
        first_admin = [
            "First admin created; the password is shown this once.",
            f"Username: {bootstrap.FIRST_ADMIN}",
            f"Password: {admin_password}",
        ]
        click.echo(boxed(first_admin))
        click.echo("  Create more users with `alignloop users create`.\n")
    if demo_prompts:
        click.echo(f"  Loaded {demo_prompts} demo prompts.\n")


def boxed(lines: list[str]) -> str:
    """`lines` in an ASCII frame, indented as the rest of the welcome (ASCII: any terminal and
    any log file shows it)."""
    width = max(map(len, lines))
    edge = f"  +{'-' * (width + 4)}+"
    return "\n".join([edge, *(f"  |  {line.ljust(width)}  |" for line in lines), edge])


@main.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Listen on this address; 0.0.0.0 for every interface (behind a proxy or in a container).",
)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="uvicorn processes.")
@click.pass_obj
def web(settings: Settings, host: str, port: int, workers: int) -> None:
    """The web tier (pages, REST, /v1) for production; needs ALIGNLOOP_SECRET_KEY."""
    import uvicorn

    settings.require_secret_key()
    uvicorn.run(
        "app.web.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        **uvicorn_options(settings),
    )


@main.command()
@click.option("--queues", "-Q", default="train,default", show_default=True)
@click.option("--concurrency", "-c", default=1, show_default=True, type=int)
@click.option(
    "--pool",
    type=click.Choice(["threads", "solo"]),
    default="threads",
    show_default=True,
    help="The worker's threads only supervise: every job runs in a child process of its own "
    "(worker.isolation), and the inference queue's requests share one engine.",
)
@click.pass_obj
def worker(settings: Settings, queues: str, concurrency: int, pool: str) -> None:
    """A Celery worker (production): one per GPU for `train`; `-Q inference --pool threads
    -c 32` serves /v1 when ALIGNLOOP_INFERENCE=celery."""
    from worker.model_store import remove_abandoned_writes

    celery = _production_celery(settings)
    remove_abandoned_writes(settings.models_dir)
    celery.worker_main(
        [
            "worker",
            "--queues",
            queues,
            "--concurrency",
            str(concurrency),
            "--pool",
            pool,
            "--loglevel",
            settings.log_level,
            "--hostname",
            f"alignloop-{queues.replace(',', '-')}@%h",
        ]
    )


@main.command()
@click.pass_obj
def beat(settings: Settings) -> None:
    """Celery beat: scheduled rounds and housekeeping (production; run exactly one)."""
    celery = _production_celery(settings)
    celery.start(["beat", "--loglevel", settings.log_level])


def _production_celery(settings: Settings) -> Celery:
    from worker.celery_app import create_celery

    if settings.embedded:
        raise click.ClickException(
            "ALIGNLOOP_REDIS_URL is not set: separate workers need a broker "
            "(or use `alignloop run`, which runs its worker inside the process)"
        )
    return create_celery(settings)


# --- administration ----------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_obj
def db_upgrade(settings: Settings, revision: str) -> None:
    """Apply migrations up to REVISION."""
    migrate.upgrade(engine_for(settings), revision)
    click.echo(f"database upgraded to {revision}")


@main.group()
def users() -> None:
    """User accounts."""


@users.command("create")
@click.option("--username", required=True, help=USERNAME_RULE)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--role", type=click.Choice([role.value for role in Role]), required=True)
@click.pass_obj
def users_create(settings: Settings, username: str, password: str, role: str) -> None:
    """Create a user (rater or admin)."""
    username = _validated(Username, username, "--username")
    password = _validated(Password, password, "--password")
    with session_scope(_session_factory(settings)) as session:
        accounts.create_user(session, username=username, password=password, role=Role(role))
    click.echo(f"created {role} {username}")


@users.command("invite")
@click.option("--role", type=click.Choice([role.value for role in Role]), required=True)
@click.option("--note", default="", help="Who the invitation is for (shown to admins only).")
@click.pass_obj
def users_invite(settings: Settings, role: str, note: str) -> None:
    """Print a one-time invitation link path (append it to the site's address)."""
    note = _validated(InvitationNote, note, "--note")
    with session_scope(_session_factory(settings)) as session:
        issued = access_links.create_invitation(
            session, role=Role(role), note=note, created_by=None, settings=settings
        )
    _print_link(issued)


@users.command("reset-link")
@click.option("--username", required=True)
@click.pass_obj
def users_reset_link(settings: Settings, username: str) -> None:
    """Print a one-time password-reset link path for USERNAME."""
    with session_scope(_session_factory(settings)) as session:
        user = _existing_user(session, username)
        issued = access_links.create_password_reset(
            session, user=user, created_by=None, settings=settings
        )
    _print_link(issued)


def _print_link(issued: access_links.IssuedLink) -> None:
    click.echo(issued.path)
    click.echo(f"valid once, until {issued.link.expires_at:%Y-%m-%d %H:%M} UTC", err=True)


@users.command("disable")
@click.option("--username", required=True)
@click.pass_obj
def users_disable(settings: Settings, username: str) -> None:
    """Stop USERNAME signing in; their sessions end and their API keys stop working at once."""
    _set_active(settings, username, is_active=False)


@users.command("enable")
@click.option("--username", required=True)
@click.pass_obj
def users_enable(settings: Settings, username: str) -> None:
    """Let a disabled USERNAME sign in again."""
    _set_active(settings, username, is_active=True)


@users.command("unlock")
@click.option("--username", required=True)
@click.pass_obj
def users_unlock(settings: Settings, username: str) -> None:
    """Let USERNAME sign in again at once after too many wrong passwords locked the account."""
    with session_scope(_session_factory(settings)) as session:
        user = _existing_user(session, username)
        throttles.unlock_account(session, username=user.username)
    click.echo(f"unlocked {user.username}")


def _set_active(settings: Settings, username: str, *, is_active: bool) -> None:
    with session_scope(_session_factory(settings)) as session:
        user = _existing_user(session, username)
        accounts.update_user(session, user=user, acting=None, is_active=is_active)
    click.echo(f"{'enabled' if is_active else 'disabled'} {user.username}")


@main.group()
def keys() -> None:
    """API keys for scripts."""


@keys.command("create")
@click.option("--username", required=True)
@click.option("--name", default="cli", show_default=True, help="A label to recognise the key by.")
@click.option(
    "--scope",
    type=click.Choice([scope.value for scope in KeyScope]),
    default=KeyScope.INFERENCE.value,
    show_default=True,
    help="inference: /v1 only; rater: also tasks and judgements; admin: everything. "
    "At most the user's role.",
)
@click.pass_obj
def keys_create(settings: Settings, username: str, name: str, scope: str) -> None:
    """Create an API key for USERNAME and print it (it is not shown again)."""
    with session_scope(_session_factory(settings)) as session:
        user = _existing_user(session, username)
        _, key = accounts.create_api_key(session, user=user, name=name, scope=KeyScope(scope))
    click.echo(key)


@keys.command("revoke")
@click.option("--username", required=True)
@click.option("--prefix", required=True, help="The key's first characters, as listed.")
@click.pass_obj
def keys_revoke(settings: Settings, username: str, prefix: str) -> None:
    """Revoke USERNAME's live keys that start with PREFIX."""
    with session_scope(_session_factory(settings)) as session:
        user = _existing_user(session, username)
        revoked = accounts.revoke_api_keys_by_prefix(session, user=user, prefix=prefix)
    if not revoked:
        raise click.ClickException(f"no live key of {username} starts with {prefix!r}")
    click.echo(f"revoked {revoked} key(s)")


def _existing_user(session: Session, username: str) -> User:
    user = accounts.get_user_by_username(session, username=username)
    if user is None:
        raise click.ClickException(f"no user named {username!r}")
    return user


@main.group()
def models() -> None:
    """The model store."""


@models.command("pull-default")
@click.pass_obj
def models_pull_default(settings: Settings) -> None:
    """Import ALIGNLOOP_BASE_MODEL (default: the bundled SmolLM2) as version `base`."""
    from worker.model_store import ModelSourceError, ModelStore

    try:
        version = ModelStore(settings).ensure_base_version(_session_factory(settings))
    except ModelSourceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"model version {version.name!r} is at {settings.models_dir / version.path}")


@models.command("register")
@click.argument("name")
@click.option(
    "--kind",
    type=click.Choice([kind.value for kind in ModelKind]),
    default="policy",
    show_default=True,
)
@click.option(
    "--parent", default="base", show_default=True, help="The version it was trained from."
)
@click.pass_obj
def models_register(settings: Settings, name: str, kind: str, parent: str) -> None:
    """Register the model folder NAME of the store, trained outside a round (across machines,
    say), as version NAME: rounds, the leaderboard and promotion then see it."""
    from worker.model_store import ModelStore

    store = ModelStore(settings)
    try:
        folder = store.path_for(name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if not (folder / "config.json").is_file():
        raise click.ClickException(f"{folder} holds no trained model (no config.json)")
    with session_scope(_session_factory(settings)) as db:
        started_from = model_registry.get_model_version(db, name=parent)
        if started_from is None:
            raise NotFound(f"no model version named {parent!r}")
        store.register(
            db,
            name=name,
            kind=ModelKind(kind),
            path=name,
            config={"registered": "from the command line"},
            parent=started_from,
        )
    click.echo(f"model version {name!r} ({kind}, from {parent!r}) is registered")


@main.command()
@click.option(
    "--format", "file_format", type=click.Choice(FORMATS), default="trl", show_default=True
)
@click.option("--round", "round_id", type=int, default=None, help="Exactly that round's data.")
@click.option("-o", "--output", type=click.File("wb"), default="-", help="Default: stdout.")
@click.pass_obj
def export(settings: Settings, file_format: str, round_id: int | None, output) -> None:
    """Export the collected preferences as JSON Lines."""
    from tqdm import tqdm

    with _session_factory(settings)() as session:
        lines = export_lines(
            session,
            file_format=file_format,
            round_id=round_id,
            snapshots_dir=settings.snapshots_dir,
        )
        # A counter on stderr (when it is a terminal), never mixed into the exported lines.
        for line in tqdm(lines, desc="exported", unit=" lines", disable=None):
            output.write(line)


@main.group()
def prompts() -> None:
    """Prompts for raters and training."""


@prompts.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tags", default="", help="Comma-separated tags added to every prompt.")
@click.option(
    "--split",
    type=click.Choice([split.value for split in PromptSplit]),
    help="Put every prompt in this split (default: as the file says, else train).",
)
@click.option("--source", default="", help="Source label for every prompt.")
@click.pass_obj
def prompts_import(
    settings: Settings, file: Path, tags: str, split: str | None, source: str
) -> None:
    """Import prompts from a JSONL, JSON or CSV FILE, skipping duplicates and invalid rows."""
    options = options_from_text(tags=tags, split=split or "", source=source)
    with session_scope(_session_factory(settings)) as session, file.open("rb") as content:
        report = import_prompts(
            session, file=content, filename=file.name, options=options, created_by=None
        )
    click.echo(
        f"created {report.created}, duplicates {report.duplicates}, skipped {len(report.skipped)}"
    )
    click.echo(
        f"  duplicates: {report.already_stored} already stored, "
        f"{report.repeated_in_file} repeated in the file"
    )
    for row in report.skipped:
        click.echo(f"  skipped {report.row_name} {row.line}: {row.reason}", err=True)


@main.group(name="rounds")
def rounds_group() -> None:
    """Training rounds."""


@rounds_group.command("start")
@click.option(
    "--algorithm",
    type=click.Choice([a.value for a in Algorithm]),
    default=DEFAULT_ALGORITHM.value,
    show_default=True,
)
@click.option(
    "--preset", type=click.Choice(list(round_config.PRESETS)), default="quick", show_default=True
)
@click.option("--line", default="main", show_default=True, help="The model line to train.")
@click.option("--wait", is_flag=True, help="Follow the round with a progress bar until it ends.")
@click.pass_obj
def rounds_start(settings: Settings, algorithm: str, preset: str, line: str, wait: bool) -> None:
    """Queue a training round (what the admin page's button does)."""
    with session_scope(_session_factory(settings)) as session:
        round_ = rounds.start_round(
            session,
            algorithm=Algorithm(algorithm),
            preset=preset,
            overrides={},
            created_by=None,
            settings=settings,
            line=line,
        )
    if settings.embedded:  # the worker lives inside `alignloop run`, which picks it up
        click.echo(f"round {round_.id} queued; a running `alignloop run` starts it within a minute")
    else:
        from worker.celery_app import create_celery

        with _session_factory(settings)() as session:
            rounds.send(session, create_celery(settings), round_.id)
        click.echo(f"round {round_.id} queued")
    if wait:
        _wait_for_round(settings, round_.id)


def _wait_for_round(settings: Settings, round_id: int) -> None:
    """Follow the round until it ends; exit non-zero unless it succeeded. Ctrl+C stops
    following, not the round."""
    from app.round_follower import follow_round

    try:
        ended = follow_round(_session_factory(settings), round_id)
    except KeyboardInterrupt:
        raise click.ClickException(
            f"stopped following; round {round_id} goes on (`alignloop rounds cancel "
            f"{round_id}` stops it)"
        ) from None
    if ended.status != RunStatus.SUCCEEDED:
        raise click.ClickException(f"round {round_id} {ended.status.value}: {ended.error}")
    version = ended.metrics.get("register", {}).get("version")
    click.echo(f"round {round_id} succeeded: {version}")


@rounds_group.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--active", is_flag=True, help="Only the queued and running rounds.")
@click.pass_obj
def rounds_list(settings: Settings, limit: int, active: bool) -> None:
    """The newest rounds first."""
    with _session_factory(settings)() as session:
        click.echo(
            cli_reports.rounds_table(rounds.recent_rounds(session, limit=limit, active=active))
        )


@rounds_group.command("show")
@click.argument("round_id", type=int)
@click.pass_obj
def rounds_show(settings: Settings, round_id: int) -> None:
    """A round's status, stage, progress, timings, data, error and metrics."""
    with _session_factory(settings)() as session:
        click.echo(
            cli_reports.round_details(_existing(rounds.get_round, session, round_id, "round"))
        )


@rounds_group.command("watch")
@click.argument("round_id", type=int)
@click.pass_obj
def rounds_watch(settings: Settings, round_id: int) -> None:
    """Follow a round with a progress bar until it ends (as `rounds start --wait` does); exit
    non-zero unless it succeeded."""
    with _session_factory(settings)() as session:
        _existing(rounds.get_round, session, round_id, "round")
    _wait_for_round(settings, round_id)


@rounds_group.command("cancel")
@click.argument("round_id", type=int)
@click.pass_obj
def rounds_cancel(settings: Settings, round_id: int) -> None:
    """Stop a queued or running round."""
    with session_scope(_session_factory(settings)) as session:
        round_ = rounds.cancel_round(session, round_id=round_id)
        click.echo(f"round {round_id}: {round_.status.value}")


@main.group(name="jobs")
def jobs_group() -> None:
    """Background jobs (candidate generation and the like)."""


@jobs_group.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--active", is_flag=True, help="Only the queued and running jobs.")
@click.pass_obj
def jobs_list(settings: Settings, limit: int, active: bool) -> None:
    """The newest jobs first."""
    with _session_factory(settings)() as session:
        click.echo(cli_reports.jobs_table(jobs.recent_jobs(session, limit=limit, active=active)))


@jobs_group.command("show")
@click.argument("job_id", type=int)
@click.pass_obj
def jobs_show(settings: Settings, job_id: int) -> None:
    """A job's status, progress, timings, parameters, result and error."""
    with _session_factory(settings)() as session:
        click.echo(cli_reports.job_details(_existing(jobs.get_job, session, job_id, "job")))


def _existing(get: Callable[[Session, int], T], session: Session, row_id: int, what: str) -> T:
    """`get(session, row_id)`, or a clean error naming the unknown id."""
    try:
        return get(session, row_id)
    except NotFound:
        raise click.ClickException(f"no {what} has id {row_id}") from None


# --- status ------------------------------------------------------------------------------------

PING_TIMEOUT_S = 1.0


@main.command()
@click.pass_obj
def status(settings: Settings) -> None:
    """What the installation is doing: models (* the current one), queue and workers, active
    rounds and jobs."""
    with _session_factory(settings)() as session:
        click.echo("Models")
        current = model_registry.current_policy(session)
        click.echo(
            _indented(
                cli_reports.models_table(model_registry.list_model_versions(session), current)
            )
        )
        health = queue_health(session)
        click.echo("\nQueue")
        jobs_by_status, rounds_by_status = _in_lifecycle_order(health.jobs, health.rounds)
        click.echo(f"  jobs: {_counts(jobs_by_status)}; rounds: {_counts(rounds_by_status)}")
        click.echo(f"  oldest queued: {cli_reports.cell(health.oldest_queued)}")
        click.echo(_indented(_broker_status(settings)))
        click.echo("\nActive rounds")
        click.echo(_indented(cli_reports.rounds_table(rounds.recent_rounds(session, active=True))))
        click.echo("\nActive jobs")
        click.echo(_indented(cli_reports.jobs_table(jobs.recent_jobs(session, active=True))))


def _broker_status(settings: Settings) -> str:
    """Messages waiting per queue and the workers that answer a ping, from the broker."""
    if settings.embedded:
        return "broker: no broker configured (embedded mode: `alignloop run` holds the worker)"
    from worker.celery_app import create_celery

    celery = create_celery(settings)
    waiting = broker.queued_messages(celery, QUEUES)
    if waiting is None:
        return "broker: unreachable; no worker can be asked"
    workers = broker.answering_workers(celery, timeout_s=PING_TIMEOUT_S)
    answered = ", ".join(workers) if workers else f"none answered within {PING_TIMEOUT_S:g} s"
    return f"broker: messages waiting: {_counts(waiting)}\nworkers: {answered}"


def _in_lifecycle_order(*counts: dict[str, int]) -> list[dict[str, int]]:
    return [{status: each[status] for status in RunStatus if status in each} for each in counts]


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items()) or "none"


def _indented(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


if __name__ == "__main__":
    sys.exit(main())
