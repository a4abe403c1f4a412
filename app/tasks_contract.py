"""The contract between the processes that send Celery messages and the worker that runs them:
every task's name, the queue it travels on and how long it may run.

Both sides import these names from here, so a task is named once: `app.broker` sends by name,
`worker.tasks` registers under the same name, and `worker.celery_app` routes by it.
"""

from __future__ import annotations

DEFAULT_QUEUE = "default"
TRAIN_QUEUE = "train"
INFERENCE_QUEUE = "inference"  # /v1 requests when ALIGNLOOP_INFERENCE=celery
QUEUES = (DEFAULT_QUEUE, TRAIN_QUEUE, INFERENCE_QUEUE)

DEFAULT_TIME_LIMIT_S = 60 * 60
TRAIN_TIME_LIMIT_S = 24 * 60 * 60

# Housekeeping, on the default queue.
PING = "alignloop.ping"
PURGE_EXPIRED_CREDENTIALS = "alignloop.purge_expired_credentials"
RECLAIM = "alignloop.reclaim"
REFRESH_QUALITY = "alignloop.refresh_quality"
SCHEDULE_GENERATION = "alignloop.schedule_generation"
SCHEDULE_ROUND = "alignloop.schedule_round"
PULL_BASE_MODEL = "alignloop.pull_base_model"

# Work on a model, on the train queue: each names the row (job or round) that holds its state.
GENERATE_CANDIDATES = "alignloop.generate_candidates"
TRAIN_REWARD_MODEL = "alignloop.train_reward_model"
TRAIN_SFT = "alignloop.train_sft"
ROUND_STAGE = "alignloop.round_stage"

# Serving on workers, on the inference queue.
INFER = "alignloop.infer"

ROUTES = {
    GENERATE_CANDIDATES: TRAIN_QUEUE,
    TRAIN_REWARD_MODEL: TRAIN_QUEUE,
    TRAIN_SFT: TRAIN_QUEUE,
    ROUND_STAGE: TRAIN_QUEUE,
    INFER: INFERENCE_QUEUE,
}
"""The queue of each task that does not go on `DEFAULT_QUEUE`."""

JOB_TASKS = {
    "generate_candidates": GENERATE_CANDIDATES,
    "train_reward_model": TRAIN_REWARD_MODEL,
    "train_sft": TRAIN_SFT,
}
"""The task that runs each kind of job (`Job.kind`)."""
