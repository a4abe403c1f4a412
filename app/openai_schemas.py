"""Request and response shapes of the OpenAI-compatible API (`/v1`), as OpenAI defines them.

Unknown fields are refused (400) rather than silently ignored, except a few that clients send
by default and that change nothing here (`user`, zero penalties, `stream_options`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

MAX_CHOICES = 8
MAX_MESSAGES = 256
MAX_MESSAGE_CHARS = 32_000
MAX_STOP = 4
DEFAULT_MAX_TOKENS = 512
MAX_TOKENS = 1 << 20
"""Beyond any model's context; the engine refuses what exceeds the served model's own."""


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)]


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)] | list[TextPart]
    name: Annotated[str, StringConstraints(max_length=64)] | None = None

    def as_chat(self) -> dict[str, str]:
        """The message for a chat template: plain text, `developer` read as `system`."""
        text = (
            self.content
            if isinstance(self.content, str)
            else "".join(part.text for part in self.content)
        )
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] = 1
    stop: (
        Annotated[str, StringConstraints(min_length=1, max_length=100)]
        | Annotated[
            list[Annotated[str, StringConstraints(min_length=1, max_length=100)]],
            Field(max_length=MAX_STOP),
        ]
        | None
    ) = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    """A 64-bit integer, as vLLM bounds it; each choice `i` samples with `seed + i`."""
    min_tokens: Annotated[int, Field(ge=0, le=MAX_TOKENS)] = 0
    """vLLM's extension: no end of turn before this many tokens (for benchmarks, mostly)."""
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Annotated[str, StringConstraints(max_length=256)] | None = None
    presence_penalty: Literal[0, 0.0] = 0
    frequency_penalty: Literal[0, 0.0] = 0

    @field_validator("messages")
    @classmethod
    def _has_a_turn_to_answer(cls, messages: list[ChatMessageIn]) -> list[ChatMessageIn]:
        if messages[-1].role == "assistant":
            raise ValueError("the last message must not be the assistant's")
        return messages

    def token_limit(self) -> int:
        return self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS

    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "alignloop"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
