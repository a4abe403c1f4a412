"""Build the wheel, install it (not editable) into a fresh venv, and start the app from there.

`make wheel-check`, part of `make test`: the wheel must be a complete app, with every package,
the templates, the static files and the migrations. It works offline: the build uses this
venv's setuptools (no build isolation), and the fresh venv takes the dependencies from this
venv through a `.pth` file. A plain path line there adds the folder to `sys.path` without
running the editable install's finder, so `app` is the wheel's.

Run it with the project venv's Python: `.venv/bin/python .ci/wheel_check.py`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

from alembic.script import ScriptDirectory

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 60
OUTSIDE = {
    key: value
    for key, value in os.environ.items()
    if not key.startswith("ALIGNLOOP_") and key != "PYTHONPATH"
}
"""The environment for the fresh venv's commands (run outside the repository), so that
nothing puts the repository's `app/` ahead of the wheel's."""
PAGES = ("/login", "/static/app.css")
"""Fetched from the running app: a rendered template and a static file."""


def main() -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="alignloop-wheel-") as scratch:
        scratch = Path(scratch)
        wheel = build_wheel(scratch)
        python = install_into_fresh_venv(wheel, scratch / "venv")
        check_every_module_is_installed(python)
        version = run([python.parent / "alignloop", "--version"], cwd=scratch, env=OUTSIDE)
        print(f"wheel-check: {wheel.name}: {version.strip()}")
        serve_pages(python.parent / "alignloop", scratch)
    print(f"wheel-check: passed in {time.monotonic() - started:.0f} s")


def build_wheel(scratch: Path) -> Path:
    """The wheel of a copy of the working tree (tracked and new files, as git sees them), so
    that no stale `build/` folder can fill in what the package configuration leaves out."""
    source = scratch / "source"
    for name in working_tree_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", scratch / "dist", source])
    (wheel,) = (scratch / "dist").glob("alignloop-*.whl")
    return wheel


def working_tree_files(*patterns: str) -> list[str]:
    """The files git tracks or would track (matching `patterns`), that exist."""
    command = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", *patterns]
    listed = run(command, cwd=ROOT).split("\0")
    return [name for name in listed if name and (ROOT / name).is_file()]


def install_into_fresh_venv(wheel: Path, venv: Path) -> Path:
    """The fresh venv's Python, with the wheel installed and this venv's packages visible."""
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    run([*pip, "--python", python, "install", "--no-deps", wheel])
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=venv)
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (Path(site.strip()) / "project-venv.pth").write_text("\n".join(ours) + "\n")
    imported = run([python, "-c", "import app; print(app.__file__)"], cwd=venv, env=OUTSIDE)
    imported = imported.strip()
    if not imported.startswith(str(venv)):
        fail(f"the fresh venv imports app from {imported}, not from the wheel")
    return python


def check_every_module_is_installed(python: Path) -> None:
    """Every module of app/ and worker/ in the repository is in the installed package (the
    package list in pyproject.toml is written by hand)."""
    modules = working_tree_files("app/*.py", "worker/*.py")
    code = "import app, pathlib; print(pathlib.Path(app.__file__).parents[1])"
    where = run([python, "-c", code], cwd=python.parents[1], env=OUTSIDE)
    missing = [name for name in modules if not (Path(where.strip()) / name).is_file()]
    if missing:
        fail(f"modules missing from the wheel (add their packages to pyproject.toml): {missing}")


def serve_pages(alignloop: Path, scratch: Path) -> None:
    """Migrate a new SQLite database (to the newest revision), start `alignloop web`, and
    fetch `PAGES` (200 each)."""
    env = OUTSIDE | {
        "ALIGNLOOP_DATA_DIR": str(scratch / "data"),
        "ALIGNLOOP_SECRET_KEY": secrets.token_urlsafe(32),
        "ALIGNLOOP_LOG_LEVEL": "WARNING",
    }
    run([alignloop, "db", "upgrade"], cwd=scratch, env=env)
    check_schema_is_at_head(scratch / "data" / "alignloop.db")
    port = free_port()
    log_path = scratch / "web.log"
    with open(log_path, "wb") as log:
        web = subprocess.Popen(
            [alignloop, "web", "--host", "127.0.0.1", "--port", str(port)],
            cwd=scratch,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, web, log_path)
        for path in PAGES:
            status = fetch(base + path)
            if status != 200:
                fail(f"GET {path} answered {status}:\n{log_path.read_text()[-3000:]}")
            print(f"wheel-check: GET {path}: 200")
    finally:
        web.send_signal(signal.SIGINT)
        try:
            web.wait(timeout=20)
        except subprocess.TimeoutExpired:
            web.kill()
            web.wait()


def check_schema_is_at_head(database: Path) -> None:
    """The wheel's migrations brought the database to the repository's newest revision."""
    head = ScriptDirectory(str(ROOT / "migrations")).get_current_head()
    try:
        with closing(sqlite3.connect(database)) as db:
            stored = db.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error as exc:
        stored = [(f"unreadable: {exc}",)]
    if stored != [(head,)]:
        fail(f"`alignloop db upgrade` from the wheel left revision {stored}, not {head!r}")


def wait_until_healthy(base: str, web: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if web.poll() is not None:
            fail(f"alignloop web exited with {web.returncode}:\n{log_path.read_text()[-3000:]}")
        if fetch(base + "/healthz") == 200:
            return
        time.sleep(0.2)
    fail(f"alignloop web did not answer /healthz in {STARTUP_TIMEOUT_S} s")


def fetch(url: str) -> int | None:
    """The status of a GET, None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(command: list, *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """The command's output; on failure, this check fails with what it printed."""
    done = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        fail(
            f"{' '.join(map(str, command))} exited with {done.returncode}:\n"
            f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return done.stdout


def fail(message: str) -> None:
    print(f"wheel-check FAILED: {message}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main()
