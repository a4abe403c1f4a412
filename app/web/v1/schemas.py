"""Request and response shapes of the OpenAI-compatible API (`/v1`), as OpenAI defines them.

Requests take what the official SDK, LangChain and LiteLLM send. Fields that change nothing
here (`store`, `metadata`, `service_tier`, `user`, ...) are accepted and ignored; so are unknown
top-level fields, which `app.web.v1.chat` names in a warning header, because OpenAI adds fields
faster than servers follow and a client should not break on one (this departs from our
`extra="forbid"` habit on purpose). Messages ignore extra keys too (`refusal`, `annotations`:
what the SDK's `message.model_dump()` carries). What would change the answer and is not
supported (tools, constrained output formats, images) is refused with a 400 that says so.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

MAX_CHOICES = 8
MAX_MESSAGES = 256
MAX_MESSAGE_CHARS = 32_000
MAX_STOP = 4
MAX_TOP_LOGPROBS = 20
DEFAULT_MAX_TOKENS = 512
DEFAULT_COMPLETION_MAX_TOKENS = 16
"""OpenAI's default for `/v1/completions`."""
MAX_TOKENS = 1 << 20
"""Beyond any model's context; the engine refuses what exceeds the served model's own."""
MAX_TOKEN_ID = 1 << 24
"""Beyond any vocabulary; the engine refuses ids outside the served model's own."""


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)]


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][\w-]{0,31}$")]
    """OpenAI's roles, or a custom one that the model's chat template renders as it is."""
    content: (
        Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)] | list[TextPart] | None
    ) = None
    name: Annotated[str, StringConstraints(max_length=64)] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, content: Any) -> Any:
        if isinstance(content, list):
            kinds = {part.get("type") for part in content if isinstance(part, dict)} - {"text"}
            if kinds:
                raise ValueError(
                    f"content parts of type {sorted(map(str, kinds))} are not supported"
                )
        return content

    def as_chat(self) -> dict[str, str]:
        """The message for a chat template: plain text, `developer` read as `system`."""
        text = (
            "".join(part.text for part in self.content)
            if isinstance(self.content, list)
            else self.content or ""
        )
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool | None = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]

    @field_validator("type")
    @classmethod
    def _only_text(cls, kind: str) -> str:
        if kind != "text":
            raise ValueError(f"response_format {kind!r} is not supported: only 'text' is")
        return kind


CONSTRAINED_DECODING = frozenset(
    {"guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs"}
)
"""vLLM's extensions for constrained output: refused, since ignoring them would silently give
unconstrained text to a client that relies on the constraint."""


def _unsupported_unless_empty(value: Any, what: str) -> Any:
    if value:
        raise ValueError(f"{what} are not supported by this server")
    return value


class GenerationRequest(BaseModel):
    """What `/v1/chat/completions` and `/v1/completions` share: the model and how to sample."""

    model_config = ConfigDict(extra="allow")

    model: Annotated[str, StringConstraints(min_length=1, max_length=100)]
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
    top_k: Annotated[int, Field(ge=0, le=MAX_TOKEN_ID)] | None = None
    """vLLM's extension: sample among the k most likely tokens (0 or absent: all)."""
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = 0.0
    logit_bias: (
        dict[Annotated[int, Field(ge=0, le=MAX_TOKEN_ID)], Annotated[float, Field(ge=-100, le=100)]]
        | None
    ) = None
    """Token id (a string of digits in JSON) to a bias added to its logit."""
    user: Annotated[str, StringConstraints(max_length=256)] | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None

    @model_validator(mode="after")
    def _stream_options_need_a_stream(self) -> GenerationRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    @model_validator(mode="after")
    def _no_constrained_decoding(self) -> GenerationRequest:
        if asked := sorted(CONSTRAINED_DECODING & set(self.model_extra or {})):
            raise ValueError(f"{', '.join(asked)}: constrained decoding is not supported")
        return self

    def ignored_fields(self) -> list[str]:
        """Top-level fields this server does not know, which it ignored."""
        return sorted(self.model_extra or {})

    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def token_limit(self) -> int:
        raise NotImplementedError

    def alternatives(self) -> int | None:
        """How many alternatives to report per token; None: no log-probabilities at all."""
        raise NotImplementedError

    def sampling(self) -> dict[str, Any]:
        """The engine's sampling fields (`worker.serving.engine.Sampling`) for this request."""
        return {
            "max_new_tokens": self.token_limit(),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k or 0,
            "stop": self.stop_strings(),
            "seed": self.seed,
            "min_new_tokens": min(self.min_tokens, self.token_limit()),
            "presence_penalty": self.presence_penalty or 0.0,
            "frequency_penalty": self.frequency_penalty or 0.0,
            "logit_bias": self.logit_bias or {},
            "logprobs": self.alternatives(),
        }


class ChatCompletionRequest(GenerationRequest):
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)] | None = None
    logprobs: bool | None = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    response_format: ResponseFormat | None = None
    parallel_tool_calls: bool | None = None
    tools: list[dict[str, Any]] | None = None
    """Refused unless empty: this server does not call tools."""
    tool_choice: Literal["none", "auto"] | None = None
    functions: list[dict[str, Any]] | None = None
    """Refused unless empty, as `tools`."""

    @field_validator("messages")
    @classmethod
    def _has_a_turn_to_answer(cls, messages: list[ChatMessageIn]) -> list[ChatMessageIn]:
        if messages[-1].role == "assistant":
            raise ValueError("the last message must not be the assistant's")
        return messages

    @field_validator("tools", "functions")
    @classmethod
    def _no_tools(cls, tools: list | None) -> list | None:
        return _unsupported_unless_empty(tools, "tools and functions")

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs to be true")
        return self

    def token_limit(self) -> int:
        return self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS

    def alternatives(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(GenerationRequest):
    """`/v1/completions` for one plain-text prompt."""

    prompt: str | list[str]
    """One string (a list of exactly one is read the same); token ids are not supported."""
    max_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)] | None = DEFAULT_COMPLETION_MAX_TOKENS
    logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    """The legacy API's: this many alternatives per token (0: only the sampled token's)."""
    echo: bool | None = False
    suffix: str | None = None
    best_of: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_text_prompt(cls, prompt: Any) -> Any:
        one = isinstance(prompt, str) or (
            isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str)
        )
        text = prompt if isinstance(prompt, str) else prompt[0] if one else ""
        if not one or not 0 < len(text) <= MAX_MESSAGE_CHARS:
            raise ValueError(
                f"one text prompt of 1 to {MAX_MESSAGE_CHARS} characters is supported (a string, "
                "or a list of one); token ids and several prompts per request are not"
            )
        return prompt

    @field_validator("echo", "suffix", "best_of", mode="before")
    @classmethod
    def _unsupported_options(cls, value: Any) -> Any:
        if value not in (None, False, "", 1) or value is True:
            raise ValueError("not supported by this server")
        return value

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def token_limit(self) -> int:
        return self.max_tokens or DEFAULT_COMPLETION_MAX_TOKENS

    def alternatives(self) -> int | None:
        return self.logprobs


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob]


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: ChoiceLogprobs | None = None


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


class TextLogprobs(BaseModel):
    """The legacy completions API's log-probabilities: parallel lists, one entry per token."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class TextChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: TextLogprobs | None = None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
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
