"""How soon long work answers a user, on the default model: raters' first tasks while candidates
are generated, and a cancel of a running round stage.

On a fresh embedded server (`alignloop run`, the bundled model, SQLite, 2 cores), as in
`bench/alignment.py`:

1. an admin imports 48 training prompts of the `concise` rule and starts candidate generation
   (two answers a prompt); a rater asks for a task every half second. Reported: seconds until
   the rater got the first task, against the seconds the whole job took (the reference: before
   tasks were created batch by batch, the first came when the job ended).
2. three simulated raters judge every task; a `quick` DPO round starts and is cancelled once
   its reward-model stage has run 20 seconds; a second round is cancelled 20 seconds into its
   policy stage. Reported: seconds from the cancel request to the round reading `cancelled`,
   against the 10 seconds promised.

Each phase reports the peak RSS of the server's whole process tree, and the tree's RSS when idle
at the end. Prints one JSON line and a Markdown table.

    .venv/bin/python bench/responsiveness.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
from alignment import (  # noqa: E402  (bench/alignment.py, next to this file)
    ADMIN,
    Api,
    _wait_until,
    embedded_server,
    import_prompts,
    make_raters,
    rate_everything,
)
from alignment_rules import RULES  # noqa: E402
from alignment_study import base_path, split_prompts  # noqa: E402

PROMPTS = 48
POLL_S = 0.5
RUNNING_BEFORE_CANCEL_S = 20.0
CANCEL_PROMISE_S = 10.0
IDLE_AFTER_S = 10.0


def first_tasks(admin: Api, rater: Api) -> dict:
    """Seconds until a rater gets a task, and until the generation job ends."""
    started = time.perf_counter()
    job = admin.call("POST", "/api/generations", json={"per_prompt": 2})["job_id"]
    first = None
    while first is None:
        if rater.client.get("/api/tasks/next").status_code == 200:
            first = time.perf_counter() - started
        time.sleep(POLL_S)
    done = admin.wait_for(f"/api/jobs/{job}", 3600)
    return {
        "first_task_s": first,
        "job_s": time.perf_counter() - started,
        "tasks": done["result"]["tasks"],
    }


def cancel_during(admin: Api, stage: str) -> dict:
    """Start a round, cancel it once `stage` has run a while; seconds the cancel took."""
    round_id = admin.call("POST", "/api/rounds", json={"algorithm": "dpo"})["round_id"]

    def in_stage() -> bool:
        state = admin.call("GET", f"/api/rounds/{round_id}")
        if state["status"] not in ("queued", "running"):
            raise RuntimeError(f"round {round_id} ended before {stage}: {state['error']}")
        return state["stage"] == stage

    _wait_until(in_stage, 1800, f"the {stage} stage", every=POLL_S)
    time.sleep(RUNNING_BEFORE_CANCEL_S)
    running = admin.call("GET", f"/api/rounds/{round_id}")
    asked = time.perf_counter()
    admin.call("POST", f"/api/rounds/{round_id}/cancel")
    while (state := admin.call("GET", f"/api/rounds/{round_id}"))["status"] == "running":
        time.sleep(0.1)
    return {
        "stage": stage,
        "progress_when_cancelled": running["progress_detail"] or running["progress"],
        "cancel_s": time.perf_counter() - asked,
        "status": state["status"],
        "error": state["error"],
    }


def main() -> int:
    rule = RULES["concise"]
    train, _ = split_prompts(rule, PROMPTS)
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with (
        tempfile.TemporaryDirectory(prefix="responsiveness-") as folder,
        embedded_server(Path(folder), base_path()) as (url, memory),
    ):
        admin = Api(url, *ADMIN)
        _wait_until(lambda: admin.client.get("/readyz").status_code == 200, 300, "a model")
        ids = import_prompts(admin, train, "train")
        raters = make_raters(admin)
        memory.take_peak()
        result["generation"] = first_tasks(admin, raters[0])
        result["generation"]["peak_rss_mb"] = memory.take_peak()
        tags = {prompt_id: p["tags"] for prompt_id, p in zip(ids, train, strict=True)}
        result["judgements"] = rate_everything(rule, raters, tags, seed=1)[0]
        result["cancels"] = []
        for stage in ("reward_model", "policy"):
            cancel = cancel_during(admin, stage)
            cancel["peak_rss_mb"] = memory.take_peak()
            result["cancels"].append(cancel)
        time.sleep(IDLE_AFTER_S)
        result["idle_rss_mb"] = memory.now_mb()
    print(json.dumps(result), flush=True)
    generation = result["generation"]
    print("| measure | seconds | reference | peak RSS |")
    print("|---|---|---|---|")
    print(
        f"| first task for a rater ({PROMPTS} prompts x 2 answers) | "
        f"{generation['first_task_s']:.0f} | whole job {generation['job_s']:.0f} "
        f"(ratio {generation['first_task_s'] / generation['job_s']:.2f}) | "
        f"{generation['peak_rss_mb'] / 1024:.2f} GiB |"
    )
    for cancel in result["cancels"]:
        print(
            f"| cancel in the {cancel['stage']} stage ({cancel['progress_when_cancelled']}) | "
            f"{cancel['cancel_s']:.1f} ({cancel['status']}) | promised {CANCEL_PROMISE_S:.0f} | "
            f"{cancel['peak_rss_mb'] / 1024:.2f} GiB |"
        )
    print(f"idle afterwards: {result['idle_rss_mb'] / 1024:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
