"""Sending messages to the workers: the one way every caller publishes a Celery message; and
the probes `alignloop status` makes (messages waiting per queue, workers that answer a ping).

A message only says "look at job N" or "run stage S of round N"; the database row it names is
the truth, and the reclaim task sends again what was never sent. So a send must never hold a
request for long nor fail work the database has already accepted: with the broker down it
gives up within about a second and says so, and the caller leaves its row marked as unsent.

Two things made a send with Redis down take 19 s and end in a `RuntimeError` (a 500 for a job
already committed): Celery's default publish retries, and the Redis result backend, which
subscribes to the result of every task sent and retries that 20 times. Nobody waits for these
results (the rows carry the outcome), so messages go out with `ignore_result`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery, chain
from celery.canvas import Signature
from kombu.exceptions import ChannelError
from kombu.exceptions import OperationalError as BrokerUnavailable

log = logging.getLogger(__name__)

PUBLISH_RETRY_POLICY = {
    # One retry: a connection pooled before a Redis restart fails once and then reconnects.
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
SEND_OPTIONS: dict[str, Any] = {"ignore_result": True, "retry_policy": PUBLISH_RETRY_POLICY}


def send_task(
    celery: Celery, name: str, *, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
) -> bool:
    """Publish task `name`; False when the broker is unavailable."""
    return _published(
        lambda: celery.send_task(name, args=list(args), kwargs=kwargs or {}, **SEND_OPTIONS),
        what=f"{name} {list(args)}",
    )


def send_chain(signatures: Sequence[Signature], *, what: str) -> bool:
    """Publish a chain (each task starts when the previous one ends); False when the broker
    is unavailable."""
    return _published(lambda: chain(*signatures).apply_async(**SEND_OPTIONS), what=what)


def _published(publish: Callable[[], object], *, what: str) -> bool:
    try:
        publish()
    except BrokerUnavailable as exc:
        log.warning("%s not sent, the broker is unavailable (%s); it will be sent later", what, exc)
        return False
    return True


def queued_messages(celery: Celery, queues: Sequence[str]) -> dict[str, int] | None:
    """Messages waiting in each of `queues` on the broker; None when it is unreachable."""
    try:
        with celery.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1)
            channel = connection.default_channel
            return {name: _message_count(channel, name) for name in queues}
    except (BrokerUnavailable, OSError) as exc:
        log.warning("the broker is unavailable (%s)", exc)
        return None


def answering_workers(celery: Celery, *, timeout_s: float) -> list[str]:
    """The names of the workers that answer a ping within `timeout_s`."""
    return sorted(celery.control.inspect(timeout=timeout_s).ping() or {})


def _message_count(channel, queue: str) -> int:
    try:
        return channel.queue_declare(queue, passive=True).message_count
    except ChannelError:  # Redis drops a queue's list once it is empty
        return 0
