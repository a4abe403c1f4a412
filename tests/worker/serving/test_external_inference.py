"""Generations on an external OpenAI-compatible server (ALIGNLOOP_INFERENCE=openai): `/v1` and
candidate generation, with a second alignloop process (`alignloop web` with its own engine)
standing in for vLLM. Both share one database, so the answers the other server gives are
recorded there as its served completions."""

from __future__ import annotations

from dataclasses import dataclass

import openai
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from app.db import make_session_factory, session_scope
from app.domain import jobs
from app.models import Job, KeyScope, Prompt, Response, ServedCompletion
from app.tasks_contract import GENERATE_CANDIDATES
from app.web.main import create_app
from tests.conftest import settings_with_tokenizer
from tests.helpers import tiny_model_database
from tests.live_server import alignloop_web, free_port, serve_in_thread
from worker.celery_app import create_celery
from worker.serving.external import ExternalInference

HELLO = [{"role": "user", "content": "Say hello."}]
GREEDY = {"model": "base", "max_tokens": 6, "temperature": 0}


@dataclass(frozen=True)
class Servers:
    front: openai.OpenAI
    """alignloop with ALIGNLOOP_INFERENCE=openai"""
    external: openai.OpenAI
    """the server it sends generations to"""


@pytest.fixture(scope="module")
def model_settings_module(tmp_path_factory, bundled_tokenizer_dir):
    """One model store for the module's servers: starting them is the slow part."""
    return settings_with_tokenizer(tmp_path_factory.mktemp("data"), bundled_tokenizer_dir)


@pytest.fixture(scope="module")
def shared(model_settings_module, tmp_path_factory):
    """A database with the tiny `base` and an inference key, both servers' settings."""
    folder = tmp_path_factory.mktemp("external")
    database = folder / "shared.db"
    engine, key = tiny_model_database(model_settings_module, database, KeyScope.INFERENCE)
    yield engine, key, folder
    engine.dispose()


def openai_mode(settings, key: str, url: str):
    """`settings` with generations sent to the server at `url`."""
    update = {"inference": "openai", "inference_url": url, "inference_api_key": SecretStr(key)}
    return settings.model_copy(update=update)


def front_app(settings, engine, key: str, url: str):
    return create_app(openai_mode(settings, key, url), engine=engine)


@pytest.fixture(scope="module")
def servers(shared, model_settings_module):
    engine, key, folder = shared
    data_dir = model_settings_module.data_dir
    with alignloop_web(engine, data_dir, folder / "external.log") as external:
        app = front_app(model_settings_module, engine, key, f"{external.base_url}/v1")
        assert isinstance(app.state.inference, ExternalInference)
        with serve_in_thread(app) as front:
            yield Servers(
                *(
                    openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
                    for url in (front, external.base_url)
                )
            )


def test_chats_go_through_the_external_server(servers):
    raw = servers.front.chat.completions.with_raw_response.create(**GREEDY, messages=HELLO, n=2)
    completion = raw.parse()
    direct = servers.external.chat.completions.create(**GREEDY, messages=HELLO)
    assert raw.headers["x-model-version"] == "base" and completion.model == "base"
    assert [choice.index for choice in completion.choices] == [0, 1]
    assert completion.choices[0].message.content == direct.choices[0].message.content
    assert completion.usage.prompt_tokens == direct.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens == 2 * direct.usage.completion_tokens
    chunks = servers.front.chat.completions.create(**GREEDY, messages=HELLO, stream=True)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert streamed == direct.choices[0].message.content


def test_logprobs_and_plain_text_prompts_go_through(servers):
    ask = {**GREEDY, "max_tokens": 4, "logit_bias": {"1000": 100}}
    chat = servers.front.chat.completions.create(
        **ask, messages=HELLO, logprobs=True, top_logprobs=2
    )
    content = chat.choices[0].logprobs.content
    assert len(content) == 4 and all(len(entry.top_logprobs) == 2 for entry in content)
    assert len({entry.token for entry in content}) == 1  # the bias reached the other engine
    completion = servers.front.completions.create(**ask, prompt="Once", logprobs=1)
    direct = servers.external.completions.create(**ask, prompt="Once", logprobs=1)
    assert completion.choices[0].text == direct.choices[0].text
    assert completion.choices[0].logprobs.tokens == direct.choices[0].logprobs.tokens


def test_candidates_are_generated_on_the_external_server(servers, shared, model_settings_module):
    engine, key, _ = shared
    factory = make_session_factory(engine)
    with session_scope(factory) as db:
        db.add_all(
            Prompt(messages=[{"role": "user", "content": text}], dedup_hash=text)
            for text in ("one", "two", "three")
        )
        job = jobs.create_job(
            db, kind=jobs.GENERATE_CANDIDATES, params={"per_prompt": 2}, created_by=None
        )
    served = served_completions(factory)
    settings = openai_mode(model_settings_module, key, str(servers.external.base_url))
    celery = create_celery(settings, engine=engine)
    assert celery.tasks[GENERATE_CANDIDATES].apply(args=[job.id]).get() == "succeeded"
    with factory() as db:
        done = db.get(Job, job.id)
        answers = db.scalars(select(Response.text).where(Response.model_version_id.is_not(None)))
        assert done.result["tasks"] >= 1 and all(answers.all())
    assert served_completions(factory) == served + 3  # one request of n=2 for each prompt


def served_completions(factory) -> int:
    with factory() as db:
        return db.scalar(select(func.count()).select_from(ServedCompletion))


def test_the_servers_refusal_is_a_400(servers):
    with pytest.raises(openai.BadRequestError, match="context"):
        servers.front.chat.completions.create(**{**GREEDY, "max_tokens": 100_000}, messages=HELLO)


def test_an_unreachable_server_is_a_503_that_names_it(shared, model_settings_module):
    engine, key, _ = shared
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with serve_in_thread(front_app(model_settings_module, engine, key, url)) as front:
        client = openai.OpenAI(base_url=f"{front}/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.InternalServerError, match="inference server") as refused:
            client.chat.completions.create(**GREEDY, messages=HELLO)
    assert refused.value.status_code == 503


def test_external_inference_needs_a_server_url(model_settings_module):
    with pytest.raises(ValueError, match="ALIGNLOOP_INFERENCE_URL"):
        model_settings_module.model_validate(
            {**model_settings_module.model_dump(), "inference": "openai"}
        )
