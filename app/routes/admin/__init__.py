"""The admin console (`/admin/...`): one page module per section of the console."""

from __future__ import annotations

from fastapi import APIRouter

from app.routes.admin import dashboard, data, guidelines, model_pages, quality, round_pages, users

router = APIRouter()
for section in (dashboard, data, quality, round_pages, model_pages, users, guidelines):
    router.include_router(section.router)
