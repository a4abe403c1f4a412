"""Request and response bodies of the JSON API. Inputs forbid unknown fields and bound sizes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.models import PromptSplit, Role

MAX_MESSAGE_CHARS = 32_000
MAX_MESSAGES = 64
MAX_TAGS = 32

Username = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,63}$"
    ),
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class InputModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenRequest(InputModel):
    username: Annotated[str, StringConstraints(max_length=64)]
    password: Annotated[str, StringConstraints(max_length=256)]


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: Role
    locale: str


class ApiKeyCreate(InputModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself; shown this once and never again.")


class ChatMessage(InputModel):
    role: Literal["system", "user", "assistant"]
    content: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_CHARS)]


class PromptIn(InputModel):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    tags: Annotated[list[Tag], Field(max_length=MAX_TAGS)] = []
    source: Annotated[str, StringConstraints(max_length=200)] = ""
    split: PromptSplit = PromptSplit.TRAIN

    @field_validator("messages")
    @classmethod
    def _ends_with_user_turn(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user":
            raise ValueError("the last message must be a user turn")
        return messages


class SkippedRow(BaseModel):
    line: int
    reason: str


class PromptImportReport(BaseModel):
    created: int
    duplicates: int
    skipped: list[SkippedRow] = []


class UserCreate(InputModel):
    username: Username
    password: Password
    role: Role
