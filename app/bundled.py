"""Where the files that ship with the app live: page templates, static files and migrations,
and the demo prompts.

A wheel carries them inside the package (`app/templates`, `app/static`, `app/migrations`;
pyproject.toml maps the repository's top-level folders there), so `pip install .` gives a
complete app. A source checkout, installed editable or not at all, keeps them at the top of
the repository, beside `app/`. The demo prompts are a file of the package itself, in both.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

DEMO_PROMPTS = Path(__file__).resolve().parent / "demo_prompts.jsonl"
"""The prompts a new installation starts with: JSON Lines of `{"messages", "tags", "split"}`."""


class BundledFilesMissing(RuntimeError):
    """The installed package lacks a folder it needs: a broken build or install."""


def bundled_dir(name: str) -> Path:
    """The folder `name` (templates, static or migrations) of this installation."""
    package = Path(str(files("app")))
    inside = package / name
    if inside.is_dir():
        return inside
    # Only a checkout (marked by its pyproject.toml) keeps them beside the package: in an
    # installation, a folder of that name beside `app/` would belong to another package.
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / name).is_dir():
        return checkout / name
    raise BundledFilesMissing(
        f"alignloop's {name}/ folder is missing from {package}: reinstall alignloop"
    )


def demo_prompt_rows() -> list[dict]:
    """The rows of `DEMO_PROMPTS`, as plain JSON (for scripts that need no database)."""
    return [json.loads(line) for line in DEMO_PROMPTS.read_text().splitlines() if line.strip()]
