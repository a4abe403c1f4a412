"""The `alignloop` command line: chores succeed; mistakes end in a message, not a traceback."""

from __future__ import annotations

import json
import threading
import time
from importlib.metadata import version

import pytest
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import select, update

from app import migrate
from app import round_follower as follower
from app.cli import main
from app.db import make_engine, make_session_factory, session_scope
from app.domain import access_links, accounts
from app.errors import NotFound, RateLimited
from app.models import (
    AccessLink,
    Algorithm,
    ApiKey,
    Job,
    ModelKind,
    ModelStatus,
    ModelVersion,
    Prompt,
    Role,
    Round,
    RoundStage,
    RunStatus,
    User,
    utcnow,
)
from app.schemas import USERNAME_RULE
from app.security import token_digest, verify_password
from app.web import throttles
from tests.conftest import REDIS_URL, make_settings
from tests.helpers import TEST_SECRET, ready_for_a_round
from tests.live_server import wait_for


def create_user(username: str = "bob", password: str = "long enough pw", role: str = "rater"):
    return ["users", "create", "--username", username, "--password", password, "--role", role]


@pytest.fixture
def cli(tmp_path, committed_engine):
    """Runs `alignloop ...` in-process against a committed scratch database."""
    runner = CliRunner()
    env = {
        "ALIGNLOOP_DATA_DIR": str(tmp_path / "data"),
        "ALIGNLOOP_DATABASE_URL": committed_engine.url.render_as_string(hide_password=False),
        "ALIGNLOOP_SECRET_KEY": TEST_SECRET,
        "ALIGNLOOP_REDIS_URL": "",
    }

    def invoke(*args: str, input: str | None = None, **settings: str):
        overrides = {f"ALIGNLOOP_{name.upper()}": value for name, value in settings.items()}
        return runner.invoke(main, list(args), env=env | overrides, input=input)

    return invoke


@pytest.fixture
def db(committed_engine):
    with make_session_factory(committed_engine)() as session:
        yield session


def test_users_create_makes_a_working_account(cli, db):
    result = cli(*create_user("Rita"))
    assert result.exit_code == 0, result.output
    assert db.scalar(select(User.role).where(User.username == "rita")) == "rater"


def test_keys_create_prints_a_key_that_is_stored_hashed(cli, db):
    cli(*create_user("ada", role="admin"))
    result = cli("keys", "create", "--username", "ada")
    key = result.output.strip()
    assert result.exit_code == 0 and key.startswith("al_")
    assert db.scalar(select(ApiKey.key_hash)) == token_digest(key)


def test_keys_create_takes_a_scope_up_to_the_users_role(cli, db):
    cli(*create_user("rita"))
    default = cli("keys", "create", "--username", "rita").output.strip()
    rating = cli("keys", "create", "--username", "rita", "--scope", "rater").output.strip()
    too_much = cli("keys", "create", "--username", "rita", "--scope", "admin")
    assert too_much.exit_code == 1 and "not 'admin'" in too_much.output
    scopes = dict(db.execute(select(ApiKey.key_hash, ApiKey.scope)).all())
    assert scopes == {token_digest(default): "inference", token_digest(rating): "rater"}


def test_web_believes_x_forwarded_for_only_from_trusted_proxies(tmp_path, monkeypatch):
    import uvicorn

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(options))
    env = {"ALIGNLOOP_DATA_DIR": str(tmp_path), "ALIGNLOOP_SECRET_KEY": TEST_SECRET}
    for trusted in ("", "10.0.0.2, 10.1.0.0/16"):
        result = CliRunner().invoke(
            main, ["web"], env={**env, "ALIGNLOOP_TRUSTED_PROXIES": trusted}
        )
        assert result.exit_code == 0, result.output
    assert [(call["proxy_headers"], call["forwarded_allow_ips"]) for call in calls] == [
        (False, ""),
        (True, "10.0.0.2,10.1.0.0/16"),
    ]
    assert all("redact_credentials" in call["log_config"]["filters"] for call in calls)


def test_a_trusted_proxy_that_is_no_address_stops_every_command(tmp_path):
    env = {"ALIGNLOOP_DATA_DIR": str(tmp_path), "ALIGNLOOP_TRUSTED_PROXIES": "proxy.local"}
    result = CliRunner().invoke(main, ["web"], env=env)
    assert result.exit_code == 1 and "'proxy.local' is not an IP address" in result.output


def test_keys_revoke_by_prefix(cli, db):
    cli(*create_user("ada", role="admin"))
    key = cli("keys", "create", "--username", "ada").output.strip()
    assert cli("keys", "revoke", "--username", "ada", "--prefix", key[:10]).exit_code == 0
    assert db.scalar(select(ApiKey.revoked_at)) is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (create_user(username="x"), "--username"),
        (create_user(password="short"), "--password"),
        (create_user(role="owner"), "--role"),
        (["keys", "create", "--username", "ghost"], "no user named 'ghost'"),
        (["users", "invite", "--role", "owner"], "--role"),
        (["users", "invite", "--role", "rater", "--note", "x" * 201], "--note"),
        (["users", "reset-link", "--username", "ghost"], "no user named 'ghost'"),
        (["users", "disable", "--username", "ghost"], "no user named 'ghost'"),
        (["users", "unlock", "--username", "ghost"], "no user named 'ghost'"),
        (["prompts", "import", "missing.jsonl"], "does not exist"),
    ],
)
def test_mistakes_end_with_a_message_and_a_nonzero_status(cli, args, message):
    result = cli(*args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_duplicate_user_is_reported_cleanly(cli):
    args = create_user()
    assert cli(*args).exit_code == 0
    result = cli(*args)
    assert result.exit_code == 1
    assert "already exists" in result.output


def test_prompts_import_reports_created_duplicates_and_skipped(cli, db, tmp_path):
    file = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "One"}, {"prompt": "One"}, {"prompt": ""}, {"prompt": "Two"}]
    file.write_text("\n".join(json.dumps(row) for row in rows))
    result = cli("prompts", "import", str(file))
    assert result.exit_code == 0
    assert "created 2, duplicates 1, skipped 1" in result.output
    assert "line 3" in result.output
    assert len(db.scalars(select(Prompt)).all()) == 2


def test_prompts_import_adds_tags_and_split_and_says_why_rows_were_skipped(cli, db, tmp_path):
    file = tmp_path / "prompts.json"
    file.write_text(json.dumps([{"prompt": "One", "tags": ["own"]}, {"messages": []}]))
    result = cli("prompts", "import", str(file), "--tags", "cli, batch", "--split", "eval")
    assert result.exit_code == 0, result.output
    assert "0 already stored, 0 repeated in the file" in result.output
    assert "skipped item 2: messages: List should have at least 1 item" in result.output
    prompt = db.scalars(select(Prompt)).one()
    assert (prompt.tags, prompt.split) == (["own", "cli", "batch"], "eval")
    assert cli("prompts", "import", str(file), "--tags", "x" * 65).exit_code == 1


def test_a_placeholder_secret_stops_every_command():
    result = CliRunner().invoke(main, ["db", "upgrade"], env={"ALIGNLOOP_SECRET_KEY": "changeme"})
    assert result.exit_code == 1
    assert "ALIGNLOOP_SECRET_KEY is a placeholder" in result.output


def test_version_prints_the_installed_version_without_reading_settings():
    result = CliRunner().invoke(main, ["--version"], env={"ALIGNLOOP_SECRET_KEY": "changeme"})
    assert result.exit_code == 0
    assert result.output == f"alignloop, version {version('alignloop')}\n"


def test_db_upgrade_creates_the_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = CliRunner().invoke(main, ["db", "upgrade"], env={"ALIGNLOOP_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    engine = make_engine(url)
    with engine.connect() as connection:
        version = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    head = ScriptDirectory.from_config(migrate.alembic_config(engine)).get_current_head()
    assert version == head


def test_production_processes_refuse_to_start_without_what_they_need(tmp_path):
    env = {
        "ALIGNLOOP_DATA_DIR": str(tmp_path),
        "ALIGNLOOP_REDIS_URL": "",
        "ALIGNLOOP_SECRET_KEY": "",
    }
    worker = CliRunner().invoke(main, ["worker"], env=env)
    assert worker.exit_code == 1 and "ALIGNLOOP_REDIS_URL is not set" in worker.output
    web = CliRunner().invoke(main, ["web"], env=env)
    assert web.exit_code == 1 and "ALIGNLOOP_SECRET_KEY is not set" in web.output


# --- user management -----------------------------------------------------------------------------


def test_users_invite_prints_a_one_time_path_that_grants_the_role(cli, db):
    result = cli("users", "invite", "--role", "admin", "--note", "for Bo")
    assert result.exit_code == 0, result.output
    path = result.stdout.strip()
    assert path.startswith("/invite/")
    token = path.removeprefix("/invite/")
    link = db.scalar(select(AccessLink))
    assert (link.token_hash, link.note) == (token_digest(token), "for Bo")
    bo = access_links.accept_invitation(db, token=token, username="bo", password="long enough pw")
    assert bo.role == Role.ADMIN


def test_users_disable_and_enable_take_effect_at_once_and_revive_no_key(cli, db):
    cli(*create_user("rita"))
    key = cli("keys", "create", "--username", "rita").stdout.strip()
    assert cli("users", "disable", "--username", "Rita").stdout.strip() == "disabled rita"
    assert accounts.get_api_key(db, key=key) is None
    db.rollback()  # end the read, so the next command can write (SQLite)
    assert cli("users", "enable", "--username", "rita").exit_code == 0
    assert db.scalar(select(User.is_active).where(User.username == "rita"))
    assert accounts.get_api_key(db, key=key) is None  # revoked when disabled


def test_users_create_states_the_username_rule_in_words(cli):
    refused = cli(*create_user(username="x"))
    assert refused.exit_code == 2 and USERNAME_RULE in refused.output
    assert "pattern" not in refused.output
    assert USERNAME_RULE in " ".join(cli("users", "create", "--help").output.split())


def test_users_unlock_lifts_a_lockout_from_wrong_passwords(cli, db, tmp_path):
    cli(*create_user("rita"))
    settings = make_settings(tmp_path)
    counters = throttles.login_counters(settings, username="rita", address="198.51.100.1")
    for _ in range(settings.login_max_failures):
        throttles.record_failure(db, counters)
    db.commit()
    with pytest.raises(RateLimited):
        throttles.ensure_allowed(db, counters, message=throttles.TOO_MANY_LOGINS)
    db.rollback()  # end the read, so the command can write (SQLite)
    assert cli("users", "unlock", "--username", "Rita").stdout.strip() == "unlocked rita"
    throttles.ensure_allowed(db, counters, message=throttles.TOO_MANY_LOGINS)


def test_users_reset_link_replaces_the_previous_one(cli, db):
    cli(*create_user("rita"))
    first, second = (
        cli("users", "reset-link", "--username", "rita").stdout.strip().removeprefix("/reset/")
        for _ in range(2)
    )
    with pytest.raises(NotFound):
        access_links.reset_password(db, token=first, password="another long pw")
    rita = access_links.reset_password(db, token=second, password="another long pw")
    assert verify_password("another long pw", rita.password_hash)


@pytest.mark.parametrize(("outcome", "exit_code"), [("succeeded", 0), ("failed", 1)])
def test_rounds_start_wait_follows_the_round_until_it_ends(cli, db, outcome, exit_code):
    ready_for_a_round(db)
    db.commit()
    db.close()
    factory = make_session_factory(db.get_bind())

    def queued() -> int | None:
        with factory() as session:
            return session.scalar(select(Round.id))

    def advance(**values) -> None:
        with session_scope(factory) as session:
            session.execute(update(Round).values(**values))

    def worker() -> None:  # what a worker writes while the round runs, then its end
        wait_for(queued, 30, "the round")
        advance(status=RunStatus.RUNNING, stage=RoundStage.POLICY, progress=0.5)
        time.sleep(follower.POLL_S * 1.5)
        error = "policy: the stage's process crashed" if outcome == "failed" else None
        advance(status=RunStatus(outcome), error=error)

    thread = threading.Thread(target=worker)
    thread.start()
    result = cli("rounds", "start", "--wait")
    thread.join()
    assert result.exit_code == exit_code, result.output
    if outcome == "failed":
        assert "round 1 failed: policy: the stage's process crashed" in result.output
    else:
        assert "round 1 succeeded" in result.output


def some_work(db) -> dict[str, int]:
    """Two policies (v1 promoted, so current), a running round, a running and a finished job."""
    base = ModelVersion(name="base", kind=ModelKind.POLICY, status=ModelStatus.READY, path="b")
    db.add(base)
    db.flush()
    promoted = ModelVersion(
        name="v1",
        kind=ModelKind.POLICY,
        status=ModelStatus.READY,
        path="v1",
        parent_id=base.id,
        promoted_at=utcnow(),
    )
    running = Round(
        algorithm=Algorithm.DPO,
        status=RunStatus.RUNNING,
        stage=RoundStage.POLICY,
        progress=0.42,
        progress_detail="step 21/50",
    )
    generating = Job(kind="generate_candidates", status=RunStatus.RUNNING, params={"n": 2})
    finished = Job(kind="pull_base_model", status=RunStatus.SUCCEEDED, result={"version": "base"})
    db.add_all([promoted, running, generating, finished])
    db.commit()
    return {"round": running.id, "running job": generating.id, "finished job": finished.id}


def section(output: str, title: str) -> list[str]:
    """The lines under `title` in `alignloop status`, up to the next blank line."""
    lines = output.splitlines()
    start = lines.index(title) + 1
    end = lines.index("", start) if "" in lines[start:] else len(lines)
    return [line.split() for line in lines[start:end]]


def test_status_shows_the_current_model_the_queue_and_the_active_work(cli, db):
    ids = some_work(db)
    result = cli("status")
    assert result.exit_code == 0, result.output
    models = section(result.output, "Models")
    assert models[0][:3] == ["CURRENT", "NAME", "KIND"]
    assert [row[:2] for row in models[1:]] == [["base", "policy"], ["*", "v1"]]
    queue = "\n".join(" ".join(row) for row in section(result.output, "Queue"))
    assert "jobs: running 1, succeeded 1; rounds: running 1" in queue
    assert "no broker configured" in queue
    [round_row] = section(result.output, "Active rounds")[1:]
    assert round_row[0] == str(ids["round"]) and "42%" in round_row
    [job_row] = section(result.output, "Active jobs")[1:]
    assert job_row[:3] == [str(ids["running job"]), "generate_candidates", "running"]


def test_status_with_redis_asks_the_broker_and_pings_the_workers(cli):
    result = cli("status", redis_url=REDIS_URL)
    assert result.exit_code == 0, result.output
    assert "broker: messages waiting: default" in result.output
    assert "workers: none answered within 1 s" in result.output


def test_status_with_redis_down_says_so_and_still_reports_the_database(cli):
    result = cli("status", redis_url="redis://127.0.0.1:1/0")
    assert result.exit_code == 0, result.output
    assert "broker: unreachable" in result.output and "Active rounds" in result.output


def test_rounds_list_and_show(cli, db):
    ids = some_work(db)
    listed = cli("rounds", "list")
    assert listed.exit_code == 0, listed.output
    header, row = [line.split() for line in listed.output.splitlines()]
    assert header[:6] == ["ID", "LINE", "ALGORITHM", "PRESET", "STATUS", "STAGE"]
    assert row[:6] == [str(ids["round"]), "main", "dpo", "quick", "running", "policy"]
    shown = cli("rounds", "show", str(ids["round"]))
    assert shown.exit_code == 0, shown.output
    assert "progress:      42% · step 21/50" in shown.output
    assert "error:         -" in shown.output


def test_jobs_list_and_show(cli, db):
    ids = some_work(db)
    active = cli("jobs", "list", "--active").output.splitlines()[1:]
    assert [line.split()[0] for line in active] == [str(ids["running job"])]
    everything = cli("jobs", "list").output.splitlines()[1:]
    assert [line.split()[0] for line in everything] == [
        str(ids["finished job"]),
        str(ids["running job"]),
    ]
    shown = cli("jobs", "show", str(ids["finished job"]))
    assert shown.exit_code == 0, shown.output
    assert "status:   succeeded" in shown.output
    assert 'result:   {"version": "base"}' in shown.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rounds", "show", "99"], "no round has id 99"),
        (["rounds", "watch", "99"], "no round has id 99"),
        (["jobs", "show", "99"], "no job has id 99"),
    ],
)
def test_unknown_ids_end_with_a_message_and_a_nonzero_status(cli, args, message):
    result = cli(*args)
    assert result.exit_code == 1 and f"Error: {message}" in result.output


def test_rounds_watch_follows_a_running_round_until_it_ends(cli, db):
    round_id = some_work(db)["round"]
    db.close()
    factory = make_session_factory(db.get_bind())

    def finish() -> None:
        time.sleep(follower.POLL_S * 1.5)
        with session_scope(factory) as session:
            session.execute(update(Round).values(status=RunStatus.FAILED, error="policy: boom"))

    thread = threading.Thread(target=finish)
    thread.start()
    result = cli("rounds", "watch", str(round_id))
    thread.join()
    assert result.exit_code == 1
    assert f"round {round_id} failed: policy: boom" in result.output
    ended = cli("rounds", "watch", str(round_id))  # an ended round: its outcome at once
    assert ended.exit_code == 1 and "failed: policy: boom" in ended.output


def test_models_register_adds_a_folder_trained_outside_a_round(cli, db, tmp_path):
    db.add(
        ModelVersion(
            name="base", kind=ModelKind.POLICY, status=ModelStatus.READY, path="base", config={}
        )
    )
    db.commit()
    folder = tmp_path / "data" / "models" / "dpo-2x8"
    assert "holds no trained model" in cli("models", "register", "dpo-2x8").output
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    unknown = cli("models", "register", "dpo-2x8", "--parent", "nope")
    assert unknown.exit_code == 1 and "no model version named 'nope'" in unknown.output

    result = cli("models", "register", "dpo-2x8")
    assert result.exit_code == 0, result.output
    version = db.scalar(select(ModelVersion).where(ModelVersion.name == "dpo-2x8"))
    assert (version.kind, version.parent.name, version.path) == (
        ModelKind.POLICY,
        "base",
        "dpo-2x8",
    )
    assert (folder / "README.md").is_file()  # its model card
    db.rollback()  # SQLite: no open transaction beside the next command's
    again = cli("models", "register", "dpo-2x8")
    assert again.exit_code == 1 and "already exists" in again.output
