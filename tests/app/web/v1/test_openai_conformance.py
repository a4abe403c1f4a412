"""`/v1` as OpenAI clients call it: a table of request shapes sent with the official client.

The shapes are adapted from vLLM's OpenAI server tests (`tests/entrypoints/openai/test_chat.py`
and `test_basic.py`), with the legacy completions and what the SDK, LangChain and LiteLLM send
by default added. Each is one of:
- supported: it must succeed with OpenAI's response shape (`check`);
- refused: a 400 (or the given status) whose message names the problem (`refused`), where
  OpenAI or vLLM refuse it too, or where this server does not support the feature;
- ignored: an unknown field; it succeeds and the `X-Ignored-Fields` header names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest

from tests.conftest import settings_with_tokenizer
from tests.helpers import serving_tiny_model

QUESTION = [
    {"role": "system", "content": "you are a helpful assistant"},
    {"role": "user", "content": "what is 1+1?"},
]
CHAT = {"model": "base", "messages": QUESTION, "max_completion_tokens": 5, "temperature": 0.0}
TEXT = {"model": "base", "prompt": "Hello, my name is", "max_tokens": 5, "temperature": 0.0}
SDK_ASSISTANT_DUMP = {
    "role": "assistant",
    "content": "2",
    "refusal": None,
    "annotations": None,
    "audio": None,
    "function_call": None,
    "tool_calls": None,
}
TOOL = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}


@dataclass(frozen=True)
class Reply:
    headers: Any
    body: Any
    """The parsed answer; a list of chunks when streamed."""


@dataclass(frozen=True)
class Shape:
    name: str
    endpoint: str
    """`chat`, `completions`, `models` or `model` (one model, `params["model"]`)."""
    params: dict = field(default_factory=dict)
    check: Callable[[Reply], None] | None = None
    refused: str | None = None
    """A word the refusal's message must contain."""
    status: int = 400


def chat(name: str, check: Callable[[Reply], None], **params) -> Shape:
    return Shape(name, "chat", {**CHAT, **params}, check=check)


def text(name: str, check: Callable[[Reply], None], **params) -> Shape:
    return Shape(name, "completions", {**TEXT, **params}, check=check)


def refused(name: str, endpoint: str, word: str, *, status: int = 400, **params) -> Shape:
    base = {"chat": CHAT, "completions": TEXT}.get(endpoint, {})
    return Shape(name, endpoint, {**base, **params}, refused=word, status=status)


def ignored(name: str, endpoint: str, **extra_body) -> Shape:
    base = CHAT if endpoint == "chat" else TEXT
    answered = chat_answered if endpoint == "chat" else text_answered

    def check(reply: Reply) -> None:
        answered(reply)
        assert set(extra_body) <= set(reply.headers["x-ignored-fields"].split(", "))

    return Shape(name, endpoint, {**base, "extra_body": extra_body}, check=check)


# --- checks ---------------------------------------------------------------------------------


def chat_answered(reply: Reply) -> None:
    completion = reply.body
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    for index, choice in enumerate(completion.choices):
        assert choice.index == index and choice.message.role == "assistant"
        assert isinstance(choice.message.content, str)
        assert choice.finish_reason in {"stop", "length"}
    usage = completion.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0


def without_logprobs(reply: Reply) -> None:
    chat_answered(reply)
    assert reply.body.choices[0].logprobs is None


def top_logprobs(count: int) -> Callable[[Reply], None]:
    def check(reply: Reply) -> None:
        chat_answered(reply)
        content = reply.body.choices[0].logprobs.content
        assert content and all(len(entry.top_logprobs) == count for entry in content)
        assert all(entry.logprob <= 0 and entry.bytes is not None for entry in content)

    return check


def choices(count: int) -> Callable[[Reply], None]:
    def check(reply: Reply) -> None:
        answered = chat_answered if reply.body.object == "chat.completion" else text_answered
        answered(reply)
        assert len(reply.body.choices) == count

    return check


def one_token_repeated(reply: Reply) -> None:
    chat_answered(reply)
    assert len({entry.token for entry in reply.body.choices[0].logprobs.content}) == 1


def length_limited(reply: Reply) -> None:
    chat_answered(reply)
    assert reply.body.choices[0].finish_reason == "length"
    assert reply.body.usage.completion_tokens == 5


def streamed(reply: Reply) -> None:
    chunks = [chunk for chunk in reply.body if chunk.choices]
    assert chunks and all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [
        chunk.choices[0].finish_reason for chunk in chunks if chunk.choices[0].finish_reason
    ]
    indices = {chunk.choices[0].index for chunk in chunks}
    assert len(finishes) == len(indices) and finishes[-1] in {"stop", "length"}


def streamed_without_usage(reply: Reply) -> None:
    streamed(reply)
    assert all(chunk.usage is None for chunk in reply.body)


def streamed_with_usage_last(reply: Reply) -> None:
    streamed(reply)
    *chunks, last = reply.body
    assert all(chunk.usage is None for chunk in chunks)
    assert last.choices == [] and last.usage.completion_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens


def streamed_logprobs(reply: Reply) -> None:
    streamed(reply)
    content = [
        entry
        for chunk in reply.body
        if chunk.choices and chunk.choices[0].logprobs
        for entry in chunk.choices[0].logprobs.content
    ]
    assert content and all(len(entry.top_logprobs) == 2 for entry in content)


def text_answered(reply: Reply) -> None:
    completion = reply.body
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    for index, choice in enumerate(completion.choices):
        assert choice.index == index and isinstance(choice.text, str)
        assert choice.finish_reason in {"stop", "length"}
    usage = completion.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0


def text_logprobs(reply: Reply) -> None:
    text_answered(reply)
    logprobs = reply.body.choices[0].logprobs
    count = len(logprobs.tokens)
    assert count and len(logprobs.token_logprobs) == len(logprobs.text_offset) == count
    assert all(1 <= len(top) <= 3 for top in logprobs.top_logprobs)


def text_streamed(reply: Reply) -> None:
    chunks = [chunk for chunk in reply.body if chunk.choices]
    assert chunks and all(chunk.object == "text_completion" for chunk in chunks)
    assert [chunk.choices[0].finish_reason for chunk in chunks][-1] in {"stop", "length"}


def text_streamed_with_usage(reply: Reply) -> None:
    text_streamed(reply)
    assert reply.body[-1].usage.completion_tokens > 0


def model_card(reply: Reply) -> None:
    assert reply.body.object == "model" and reply.body.id == "base"


def model_list(reply: Reply) -> None:
    assert {card.id for card in reply.body.data} == {"base", "current"}


SHAPES = [
    # chat: test_chat.py
    chat("no_logprobs", without_logprobs, logprobs=False),
    chat("zero_logprobs", top_logprobs(0), logprobs=True, top_logprobs=0),
    chat("some_logprobs", top_logprobs(5), logprobs=True, top_logprobs=5),
    chat("max_logprobs", top_logprobs(20), logprobs=True, top_logprobs=20),
    refused(
        "too_many_logprobs_streamed",
        "chat",
        "top_logprobs",
        logprobs=True,
        top_logprobs=21,
        stream=True,
    ),
    refused("too_many_logprobs", "chat", "top_logprobs", logprobs=True, top_logprobs=30),
    refused("top_logprobs_without_logprobs", "chat", "logprobs", top_logprobs=2),
    ignored("prompt_logprobs", "chat", prompt_logprobs=1),
    ignored("negative_prompt_logprobs", "chat", prompt_logprobs=-1),
    chat("single_session", length_limited, logprobs=True, top_logprobs=5),
    chat(
        "multi_turn",
        chat_answered,
        messages=[
            *QUESTION,
            {"role": "assistant", "content": "2"},
            {"role": "user", "content": "in json?"},
        ],
    ),
    chat("streaming", streamed, stream=True),
    chat(
        "stream_without_usage",
        streamed_without_usage,
        stream=True,
        stream_options={"include_usage": False},
    ),
    chat(
        "stream_with_usage",
        streamed_with_usage_last,
        stream=True,
        stream_options={"include_usage": True},
    ),
    chat(
        "stream_continuous_usage_option",
        streamed,
        stream=True,
        stream_options={"include_usage": True, "continuous_usage_stats": False},
    ),
    refused(
        "stream_options_without_stream",
        "chat",
        "stream_options",
        stream_options={"include_usage": True},
    ),
    refused(
        "stream_options_none_without_stream",
        "chat",
        "stream_options",
        stream=False,
        stream_options={"include_usage": None},
    ),
    chat("stream_logprobs", streamed_logprobs, stream=True, logprobs=True, top_logprobs=2),
    chat("stream_min_tokens", streamed, stream=True, extra_body={"min_tokens": 5}),
    refused("guided_choice", "chat", "not supported", extra_body={"guided_choice": ["a", "b"]}),
    refused("guided_json", "chat", "not supported", extra_body={"guided_json": {"type": "object"}}),
    refused("guided_regex", "chat", "not supported", extra_body={"guided_regex": "[a-z]+"}),
    refused(
        "structured_outputs",
        "chat",
        "not supported",
        extra_body={"structured_outputs": {"choice": ["a"]}},
    ),
    refused(
        "response_format_json_object",
        "chat",
        "not supported",
        response_format={"type": "json_object"},
    ),
    refused(
        "response_format_json_schema",
        "chat",
        "not supported",
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "n", "schema": {"type": "object"}},
        },
    ),
    chat("response_format_text", chat_answered, response_format={"type": "text"}),
    refused(
        "named_tool_use",
        "chat",
        "not supported",
        tools=[TOOL],
        tool_choice={"type": "function", "function": {"name": "add"}},
    ),
    refused("required_tool_use", "chat", "not supported", tools=[TOOL], tool_choice="required"),
    refused(
        "tool_choice_without_tools",
        "chat",
        "tool_choice",
        tool_choice={"type": "function", "function": {"name": "add"}},
    ),
    chat(
        "extra_keys_in_messages",
        chat_answered,
        messages=[{"role": "user", "content": "hi", "extra_field": "x"}],
    ),
    chat(
        "content_parts",
        chat_answered,
        messages=[{"role": "user", "content": [{"type": "text", "text": "what is 1+1?"}]}],
    ),
    refused(
        "image_content",
        "chat",
        "content",
        messages=[
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
            }
        ],
    ),
    chat(
        "custom_role",
        chat_answered,
        messages=[{"role": "my-custom-role", "content": "hi"}, {"role": "user", "content": "1+1?"}],
    ),
    refused("seed_above_64_bits", "chat", "seed", seed=2**64),
    refused("seed_below_64_bits", "chat", "seed", seed=-(2**63) - 1),
    chat("seed_at_the_edge", chat_answered, seed=2**63 - 1, temperature=1.0),
    chat("logit_bias", one_token_repeated, logit_bias={"1000": 100}, logprobs=True),
    refused("logit_bias_out_of_range", "chat", "logit_bias", logit_bias={"1000": 101}),
    refused("logit_bias_unknown_token", "chat", "logit_bias", logit_bias={"10000000": 5}),
    chat("penalties", chat_answered, presence_penalty=1.5, frequency_penalty=-0.5),
    refused("penalty_out_of_range", "chat", "presence_penalty", presence_penalty=3),
    chat("n", choices(2), n=2, temperature=1.0, seed=3),
    chat("n_streamed", streamed, n=2, stream=True, temperature=1.0),
    chat("stop_strings", chat_answered, stop=["\n", "."]),
    chat("max_tokens", chat_answered, max_tokens=3),
    chat(
        "developer_role",
        chat_answered,
        messages=[{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}],
    ),
    chat(
        "sdk_message_dump",
        chat_answered,
        messages=[*QUESTION, SDK_ASSISTANT_DUMP, {"role": "user", "content": "and 2+2?"}],
    ),
    chat(
        "harmless_defaults",
        chat_answered,
        store=False,
        metadata={"run": "1"},
        service_tier="auto",
        parallel_tool_calls=True,
        user="someone",
        logprobs=False,
        n=1,
        stream=False,
    ),
    chat("top_k", chat_answered, extra_body={"top_k": 5}, temperature=1.0),
    ignored("unknown_field", "chat", some_future_field=True),
    ignored("vllm_echo", "chat", echo=True),
    refused("temperature_out_of_range", "chat", "temperature", temperature=3),
    refused("no_messages", "chat", "messages", messages=[]),
    refused("unknown_model", "chat", "model", model="nope", status=404),
    # test_basic.py
    Shape("list_models", "models", check=model_list),
    Shape("one_model", "model", {"model": "base"}, check=model_card),
    refused("unknown_one_model", "model", "does not exist", model="nope", status=404),
    refused("wrong_content_type", "chat", "", extra_headers={"Content-Type": "text/plain"}),
    # legacy completions
    text("text_completion", text_answered),
    text("text_prompt_list_of_one", text_answered, prompt=["Hello, my name is"]),
    refused("text_prompt_list_of_two", "completions", "prompt", prompt=["a", "b"]),
    refused("text_prompt_token_ids", "completions", "prompt", prompt=[1, 2, 3]),
    text("text_logprobs", text_logprobs, logprobs=3),
    text("text_streamed", text_streamed, stream=True),
    text(
        "text_streamed_with_usage",
        text_streamed_with_usage,
        stream=True,
        stream_options={"include_usage": True},
    ),
    text("text_n", choices(2), n=2, temperature=1.0),
    text("text_logit_bias", text_answered, logit_bias={"1000": 50}),
    refused("text_echo", "completions", "echo", echo=True),
    refused("text_best_of", "completions", "best_of", best_of=2),
    refused("text_suffix", "completions", "suffix", suffix="!"),
]


def send(client: openai.OpenAI, shape: Shape) -> Reply:
    params = dict(shape.params)
    if shape.endpoint == "models":
        raw = client.models.with_raw_response.list()
    elif shape.endpoint == "model":
        raw = client.models.with_raw_response.retrieve(params["model"])
    else:
        api = client.chat.completions if shape.endpoint == "chat" else client.completions
        raw = api.with_raw_response.create(**params)
    body = raw.parse()
    return Reply(raw.headers, list(body) if params.get("stream") else body)


@pytest.fixture(scope="module")
def client(tmp_path_factory, bundled_tokenizer_dir) -> openai.OpenAI:
    folder = tmp_path_factory.mktemp("conformance")
    with serving_tiny_model(
        settings_with_tokenizer(folder / "data", bundled_tokenizer_dir)
    ) as world:
        yield openai.OpenAI(base_url=world["url"] + "/v1", api_key=world["key"], max_retries=0)


def test_the_table_has_one_row_per_name():
    assert len({shape.name for shape in SHAPES}) == len(SHAPES)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.name)
def test_each_request_shape_gets_what_openai_clients_expect(client, shape):
    if shape.check is not None:
        shape.check(send(client, shape))
        return
    with pytest.raises(openai.APIStatusError) as raised:
        send(client, shape)
    assert raised.value.status_code == shape.status
    assert shape.refused.lower() in raised.value.message.lower()
