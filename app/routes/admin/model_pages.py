"""Admin pages: model versions (to be written)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/admin")
