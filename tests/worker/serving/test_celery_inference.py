"""`/v1` served by a worker process over Redis (ALIGNLOOP_INFERENCE=celery)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import openai
import pytest
import redis

from app.models import KeyScope
from app.web.main import create_app
from tests.conftest import REDIS_URL
from tests.helpers import TEST_SECRET, tiny_model_database
from tests.live_server import serve_in_thread

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def remote(model_settings, tmp_path):
    """A database with the tiny `base`, an inference worker process, and a web server whose
    /v1 sends every request to that worker."""
    redis.Redis.from_url(REDIS_URL).flushdb()
    engine, key = tiny_model_database(model_settings, tmp_path / "remote.db", KeyScope.INFERENCE)
    database_url = engine.url.render_as_string(hide_password=False)
    env = {
        **os.environ,
        "ALIGNLOOP_DATA_DIR": str(model_settings.data_dir),
        "ALIGNLOOP_DATABASE_URL": database_url,
        "ALIGNLOOP_REDIS_URL": REDIS_URL,
        "ALIGNLOOP_LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "worker",
            "-Q",
            "inference",
            "--pool",
            "threads",
            "-c",
            "4",
        ],
        env=env,
    )
    settings = model_settings.model_copy(
        update={"redis_url": REDIS_URL, "inference": "celery", "database_url": database_url}
    )
    with serve_in_thread(create_app(settings, engine=engine)) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    worker.send_signal(signal.SIGTERM)
    worker.wait(30)
    engine.dispose()
    redis.Redis.from_url(REDIS_URL).flushdb()


def test_a_worker_serves_plain_and_streaming_completions(remote):
    raw = remote.chat.completions.with_raw_response.create(
        model="base", messages=HELLO, max_tokens=6, temperature=0, n=2
    )
    completion = raw.parse()
    assert raw.headers["x-model-version"] == "base"
    assert [choice.index for choice in completion.choices] == [0, 1]
    assert completion.usage.prompt_tokens > 0
    chunks = list(
        remote.chat.completions.create(
            model="base", messages=HELLO, max_tokens=6, temperature=0, stream=True
        )
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert streamed == completion.choices[0].message.content


def test_a_worker_serves_logprobs_and_plain_text_prompts(remote):
    ask = {"model": "base", "max_tokens": 4, "temperature": 0, "logit_bias": {"1000": 100}}
    chat = remote.chat.completions.create(**ask, messages=HELLO, logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert len(content) == 4 and all(len(entry.top_logprobs) == 2 for entry in content)
    assert len({entry.token for entry in content}) == 1  # the bias reached the worker's engine
    pieces = list(remote.completions.create(**ask, prompt="Once", logprobs=1, stream=True))
    tokens = [
        token
        for piece in pieces
        if piece.choices[0].logprobs
        for token in piece.choices[0].logprobs.tokens
    ]
    assert tokens == [entry.token for entry in content]


def test_the_workers_refusal_is_a_400(remote):
    with pytest.raises(openai.BadRequestError, match="context"):
        remote.chat.completions.create(model="base", messages=HELLO, max_tokens=100_000)


@pytest.mark.parametrize(
    "mode",
    [
        f"redis_url={REDIS_URL!r}, inference='celery'",
        "inference='openai', inference_url='http://x'",
    ],
    ids=["celery", "openai"],
)
def test_the_web_tier_does_not_load_torch_when_generations_run_elsewhere(model_settings, mode):
    code = (
        "import sys; from app.web.main import create_app; from app.config import Settings; "
        f"create_app(Settings(_env_file=None, data_dir={str(model_settings.data_dir)!r}, "
        f"secret_key={TEST_SECRET!r}, {mode})); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
