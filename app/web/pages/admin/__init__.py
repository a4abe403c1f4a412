"""The admin console (`/admin/...`): one page module per section of the console."""

from __future__ import annotations

from fastapi import APIRouter

from app.web.pages.admin import dashboard, data, guidelines, models, quality, rounds, users

router = APIRouter()
for section in (dashboard, data, quality, rounds, models, users, guidelines):
    router.include_router(section.router)
