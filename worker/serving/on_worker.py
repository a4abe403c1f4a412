"""Serving on workers (ALIGNLOOP_INFERENCE=celery): the worker side of `worker.serving.remote`.

An inference task runs one request on the worker process's engines and publishes its events on
the Redis pub/sub channel that the web process listens to; the web asks for a cancel by setting
a key that this side polls.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from functools import partial

import redis

from app.config import Settings
from app.inference import ChatJob
from worker.serving.engine import Generation, TokenLogprob
from worker.serving.local import ModelServer, choice_done, openai_logprobs, prompt_ids, sampling_for
from worker.serving.remote import cancel_key

CANCEL_POLL_S = 0.2

_process_server: ModelServer | None = None
_process_server_lock = threading.Lock()


def process_model_server(settings: Settings) -> ModelServer:
    """The worker process's engines, shared by all the inference tasks running in it."""
    global _process_server
    with _process_server_lock:
        if _process_server is None:
            _process_server = ModelServer(settings)
        return _process_server


def serve_on_worker(settings: Settings, job: ChatJob, channel: str) -> str:
    """Run `job` on this worker's engine and publish its events to Redis `channel`.

    Events are JSON: `start` (prompt tokens), `delta`, `done` per choice, or `error`. The web
    tier asks for cancellation by setting the key `<channel>:cancel`.
    """
    broker = redis.Redis.from_url(settings.redis_url)

    def publish(event: dict) -> None:
        broker.publish(channel, json.dumps(event))

    engine = process_model_server(settings).engine(job.version_name, job.version_path)
    generations: list[Generation] = []
    starting = threading.Lock()  # no delta goes out before `start`: the engine may be quick

    def publish_delta(index: int, text: str, logprobs: tuple[TokenLogprob, ...]) -> None:
        delta = {"type": "delta", "index": index, "text": text}
        with starting:
            publish({**delta, "logprobs": openai_logprobs(logprobs)})

    with starting:
        try:
            ids = prompt_ids(engine, job)
            for index in range(job.n):
                generations.append(
                    engine.submit(
                        ids, sampling_for(job, index), on_text=partial(publish_delta, index)
                    )
                )
        except ValueError as exc:
            for generation in generations:
                generation.cancel()
            publish({"type": "error", "message": str(exc)})
            return "invalid"
        publish({"type": "start", "prompt_tokens": len(ids)})
    for index, generation in enumerate(generations):
        while not generation.done:
            if broker.exists(cancel_key(channel)):
                for running in generations:
                    running.cancel()
            generation.wait_done(CANCEL_POLL_S)
        done = generation.completion
        if done is None:
            publish({"type": "error", "message": f"generation failed: {generation.error}"})
            return "failed"
        publish({"type": "done", **asdict(choice_done(index, done, job.sampling))})
    return "served"
