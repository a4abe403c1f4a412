"""Where the files that ship with the app live: page templates, static files and migrations.

A wheel carries them inside the package (`app/templates`, `app/static`, `app/migrations`;
pyproject.toml maps the repository's top-level folders there), so `pip install .` gives a
complete app. A source checkout, installed editable or not at all, keeps them at the top of
the repository, beside `app/`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


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
