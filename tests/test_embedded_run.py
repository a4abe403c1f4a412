"""`alignloop run` end to end, as `make run` starts it: a real server process on a free port."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import html
from tests.live_server import STARTUP_TIMEOUT_S, alignloop_run, wait_for


@pytest.fixture
def server(tmp_path, model_settings):
    """`alignloop run` on the tiny model; yields (base URL, its environment, its output file)."""
    with alignloop_run(model_settings.data_dir, tmp_path / "run.log") as live:
        yield live.base_url, live.env, live.output


def printed_admin_password(output: Path) -> str:
    match = re.search(r"Password: (\S+)", output.read_text())
    assert match, output.read_text()
    return match.group(1)


def test_the_admin_password_stands_in_a_box_with_no_log_line_above_it(server):
    _, _, output = server
    lines = output.read_text().splitlines()
    top = next(index for index, line in enumerate(lines) if line.strip().startswith("+--"))
    box = lines[top : top + 5]
    assert box[0] == box[4] and box[4].strip().startswith("+--")
    starts = ("|  First admin", "|  Username: admin", "|  Password: ")
    assert all(line.strip().startswith(start) for line, start in zip(box[1:4], starts, strict=True))
    assert len({len(line) for line in box}) == 1  # the right edge lines up
    above = "\n".join(lines[:top])
    assert "alignloop is starting" in above
    assert not [word for word in ("WARNING", "Warning", "alembic", "INFO") if word in above]


def test_make_run_serves_logs_in_the_printed_admin_and_accepts_cli_keys(server, model_settings):
    base_url, env, output = server
    with httpx.Client(base_url=base_url, follow_redirects=True) as browser:
        login = browser.get("/login")
        assert login.status_code == 200
        token = html(login).select_one("input[name=login_token]")["value"]
        signed_in = browser.post(
            "/login",
            data={
                "username": "admin",
                "password": printed_admin_password(output),
                "login_token": token,
            },
        )
        assert signed_in.status_code == 200 and "Welcome, admin" in signed_in.text
        tiles = html(browser.get("/admin")).select("dl.tiles div")
        assert {"Prompts": "120"}.items() <= {t.dt.text: t.dd.text for t in tiles}.items()  # demo
        assert "Version 1" in browser.get("/guidelines").text  # the shipped guidelines

    key = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "keys",
            "create",
            "--username",
            "admin",
            "--scope",
            "admin",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    me = httpx.get(f"{base_url}/api/auth/me", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 200 and me.json()["role"] == "admin"

    def ready() -> bool:
        answer = httpx.get(f"{base_url}/readyz")
        if answer.status_code == 503:  # only while the worker prepares the base model
            assert answer.json()["failing"] == ["model"], answer.json()
        return answer.status_code == 200

    wait_for(ready, STARTUP_TIMEOUT_S, "the embedded worker to prepare the base model")
    assert (model_settings.models_dir / "base" / "config.json").is_file()
    secret = model_settings.data_dir / "secret_key"
    assert secret.stat().st_mode & 0o077 == 0
