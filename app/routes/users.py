"""`/api/users`: accounts, managed by admins."""

from __future__ import annotations

from fastapi import APIRouter

from app import crud
from app.deps import AdminUser, DbSession
from app.schemas import UserCreate, UserOut

router = APIRouter(prefix="/api/users", tags=["users"])


@router.get("")
def list_users(db: DbSession, admin: AdminUser) -> list[UserOut]:
    return [UserOut.model_validate(user) for user in crud.list_users(db)]


@router.post("", status_code=201)
def create_user(body: UserCreate, db: DbSession, admin: AdminUser) -> UserOut:
    user = crud.create_user(db, username=body.username, password=body.password, role=body.role)
    db.commit()
    return UserOut.model_validate(user)
