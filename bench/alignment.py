"""Does a round make the model better at what raters prefer? The whole loop, as users run it.

For each rule (`alignment_rules.RULES`), on a fresh embedded server (`alignloop run`, the
bundled default model, SQLite, 2 cores):

1. an admin imports the rule's prompts over the API (training prompts, and a few `eval`
   prompts for the rounds' own evaluation);
2. each round: a candidate job (two answers per training prompt, seeded), three simulated
   raters judge every task through the REST API by the rule (each ranks at random 10% of the
   time; for the refusal rule, a rater who finds no acceptable answer writes one a third of
   the time, `alignment_rules.rewrite`), a round runs (`--algorithm`, `--preset`) and its
   policy is promoted;
3. after the last round, held-out prompts that no round saw are answered over
   `/v1/chat/completions` by the promoted version and by `base`, with the same seeds, and the
   rule judges each pair of answers.

Reported per rule: the win rate over `base` with a 95% bootstrap interval (resampling
prompts), the rule's base rate and the aligned rate on the held-out prompts, KL(aligned ||
base) per answer, each round's reward-model held-out accuracy, judgements used, seconds per
stage, the peak RSS of the server's whole process tree over the rounds (per stage in the
JSON) and while it answers the held-out prompts, its RSS when idle after the rounds, the
checks against degenerate output (empty answers; distinct bigrams against the base's, over
all answers and over as many answers that meet the rule), and side effects (how often the
held-out prompts that the rule does not judge still meet it: for the refusal rule, the
look-alike requests that should be answered). Results go to `.cache/alignment/results/`
as JSON, and a Markdown table is printed.

    .venv/bin/python bench/alignment.py [--rules concise,chinese,...] [--rounds 2]
        [--algorithm dpo] [--preset quick] [--overrides '{"policy": {...}}']
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Run as a script or imported by the long learning test: `app`, `worker` and the modules next
# to this file must all be importable.
sys.path[:0] = [str(REPO), str(HERE)]
from alignment_rules import (  # noqa: E402  (bench/alignment_rules.py, next to this file)
    RULES,
    Comparison,
    Rule,
    judge,
    rank,
    rewrite,
)
from alignment_study import base_path, kl_to_base, load_base, split_prompts  # noqa: E402

RESULTS = REPO / ".cache" / "alignment" / "results"
ALIGNLOOP = Path(sys.executable).with_name("alignloop")
RATERS = 3
NOISE = 0.1
EVAL_PROMPTS = 12
SEEDS = (1, 2)
SERVED = {"temperature": 0.8, "top_p": 0.95, "max_tokens": 192}
"""How the held-out prompts are answered over `/v1`: sampled, as clients usually call."""
CANDIDATE_TOKENS = 192
ADMIN = ("bench-admin", "bench admin password")


@dataclass
class RuleResult:
    rule: str
    kind: str
    rounds: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    held_out: dict = field(default_factory=dict)
    answers: list[dict] = field(default_factory=list)
    """The held-out answers, aligned and base, kept with the figures so they can be read."""
    peak_rss_mb: float = 0.0
    """Over the rounds: candidate jobs, rating, training, promotion."""
    serving_peak_rss_mb: float = 0.0
    """While the held-out prompts are answered (32 requests in flight, two versions loaded)."""
    idle_rss_mb: float = 0.0


# --- the server and its process tree -------------------------------------------------------------


class TreeMemory:
    """Samples the RSS of a process and all its descendants; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def take_peak(self) -> float:
        """The peak since the last call (or the start); the next phase starts from now."""
        peak, self.peak = self.peak, self.now_mb()
        return peak

    def now_mb(self) -> float:
        total = 0
        for process in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):  # a child that just ended
                total += process.memory_info().rss
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak = max(self.peak, self.now_mb())
            except psutil.NoSuchProcess:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def embedded_server(data_dir: Path, base: Path):
    """`alignloop run` on a fresh data folder whose model store already holds the converted
    base model (converting it is the same for every rule); yields (base URL, memory meter)."""
    shutil.copytree(base, data_dir / "models" / "base")
    port = _free_port()
    env = {
        **os.environ,
        "ALIGNLOOP_DATA_DIR": str(data_dir),
        "ALIGNLOOP_BASE_MODEL": "bundled",
        "ALIGNLOOP_DEVICE": "cpu",
        "ALIGNLOOP_DEMO_PROMPTS": "false",
        "ALIGNLOOP_GOLD_RATE": "0",
        "ALIGNLOOP_MAX_NEW_TOKENS": str(CANDIDATE_TOKENS),
        "ALIGNLOOP_SECRET_KEY": secrets.token_urlsafe(40),
        "ALIGNLOOP_V1_REQUESTS_PER_MINUTE": "100000",
        "ALIGNLOOP_LOG_LEVEL": "WARNING",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.pop("ALIGNLOOP_REDIS_URL", None)
    env.pop("ALIGNLOOP_DATABASE_URL", None)
    subprocess.run([ALIGNLOOP, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run(
        [
            ALIGNLOOP,
            "users",
            "create",
            "--username",
            ADMIN[0],
            "--password",
            ADMIN[1],
            "--role",
            "admin",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    log = (data_dir / "server.log").open("w")
    server = subprocess.Popen(
        [ALIGNLOOP, "run", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    memory = TreeMemory(server.pid)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 120, "the server")
        yield url, memory
    finally:
        memory.stop()
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until(check, seconds: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(every)
    raise TimeoutError(f"waited {seconds:.0f} s for {what}")


# --- the admin's and the raters' side, over REST -------------------------------------------------


class Api:
    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url
        token = httpx.post(
            f"{url}/api/auth/token", json={"username": username, "password": password}
        ).json()["access_token"]
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=600
        )

    def call(self, method: str, path: str, **kwargs) -> dict:
        response = self.client.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else {}

    def wait_for(
        self,
        path: str,
        seconds: float,
        *,
        every: float = 2.0,
        on_poll: Callable[[dict], None] | None = None,
    ) -> dict:
        """Poll a job or round every `every` seconds until it has ended; `on_poll` sees
        each state."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            state = self.call("GET", path)
            if on_poll is not None:
                on_poll(state)
            if state["status"] in ("succeeded", "failed", "cancelled"):
                if state["status"] != "succeeded":
                    raise RuntimeError(f"{path} {state['status']}: {state.get('error')}")
                return state
            time.sleep(every)
        raise TimeoutError(f"{path} still running after {seconds:.0f} s")


def import_prompts(api: Api, prompts: list[dict], split: str) -> list[int]:
    lines = "\n".join(json.dumps({**p, "split": split}, ensure_ascii=False) for p in prompts)
    report = api.call(
        "POST", "/api/prompts", files={"file": ("prompts.jsonl", lines.encode(), "text/plain")}
    )
    return report["created_ids"]


def make_raters(admin: Api) -> list[Api]:
    raters = []
    for number in range(RATERS):
        name, password = f"rater{number}", f"rater {number} password"
        admin.call(
            "POST", "/api/users", json={"username": name, "password": password, "role": "rater"}
        )
        raters.append(Api(admin.url, name, password))
    return raters


def rate_everything(
    rule: Rule, raters: list[Api], tags: dict[int, list[str]], seed: int
) -> tuple[int, int]:
    """Every rater judges every task it is offered until none is left (writing an answer now
    and then, where the rule has raters do so); returns the judgements and the rewrites."""
    judged = rewrites = 0
    for number, rater in enumerate(raters):
        rng = random.Random(seed * 100 + number)
        while (task := rater.client.get("/api/tasks/next")).status_code == 200:
            body = task.json()
            answers = [(response["id"], response["text"]) for response in body["responses"]]
            prompt_tags = tags[body["prompt"]["id"]]
            judgement = {"ranking": rank(rule, answers, prompt_tags, noise=NOISE, rng=rng)}
            if written := rewrite(rule, answers, prompt_tags, rng=rng):
                judgement["rewrite"] = written
                rewrites += 1
            rater.call("POST", f"/api/tasks/{body['task_id']}/judgement", json=judgement)
            judged += 1
    return judged, rewrites


# --- one rule ------------------------------------------------------------------------------------


def run_rule(rule: Rule, args: argparse.Namespace) -> RuleResult:
    result = RuleResult(rule.name, rule.kind)
    per_round = args.prompts_per_round
    train, held_out = split_prompts(rule, EVAL_PROMPTS + args.rounds * per_round)
    eval_prompts, train = train[:EVAL_PROMPTS], train[EVAL_PROMPTS:]
    with tempfile.TemporaryDirectory(prefix=f"alignment-{rule.name}-") as folder:
        with embedded_server(Path(folder), args.base or base_path()) as (url, memory):
            admin = Api(url, *ADMIN)
            _wait_until(
                lambda: any(m["name"] == "base" for m in admin.call("GET", "/api/models")),
                300,
                "the base model",
            )
            started = time.perf_counter()
            eval_ids = import_prompts(admin, eval_prompts, "eval")
            raters = make_raters(admin)
            # The rounds' own A/B tasks (on the eval prompts) are rated too, as raters would.
            tags = {
                prompt_id: p["tags"] for prompt_id, p in zip(eval_ids, eval_prompts, strict=True)
            }
            for number in range(args.rounds):
                chunk = train[number * per_round : (number + 1) * per_round]
                ids = import_prompts(admin, chunk, "train")
                tags.update({prompt_id: p["tags"] for prompt_id, p in zip(ids, chunk, strict=True)})
                result.rounds.append(
                    run_round(admin, raters, memory, rule, ids, tags, number + 1, args)
                )
            result.seconds["rounds"] = time.perf_counter() - started
            result.peak_rss_mb = max(max(r["peak_rss_mb"].values()) for r in result.rounds)
            if ab_job := result.rounds[-1]["ab_job"]:  # idle means its A/B answers are written
                admin.wait_for(f"/api/jobs/{ab_job}", 1800)
            time.sleep(5)
            result.idle_rss_mb = memory.now_mb()
            version = result.rounds[-1]["version"]
            started = time.perf_counter()
            answers = answer_held_out(admin, held_out, version)
            result.seconds["held_out_answers"] = time.perf_counter() - started
            result.serving_peak_rss_mb = memory.take_peak()
        result.held_out = judge_held_out(rule, held_out, answers)
        result.answers = [
            {
                "model": model,
                "prompt": held_out[index]["messages"][-1]["content"],
                "seed": seed,
                "text": text,
            }
            for (model, index, seed), text in answers.items()
        ]
        result.held_out["kl_to_base"] = held_out_kl(
            Path(folder) / "models" / version, held_out, answers
        )
    return result


def run_round(
    admin: Api,
    raters: list[Api],
    memory: TreeMemory,
    rule: Rule,
    prompt_ids: list[int],
    tags: dict,
    number: int,
    args: argparse.Namespace,
) -> dict:
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    job = admin.call(
        "POST",
        "/api/generations",
        json={"prompt_ids": prompt_ids, "per_prompt": 2, "overlap": RATERS, "seed": number},
    )
    memory.take_peak()  # from here on, the round's
    admin.wait_for(f"/api/jobs/{job['job_id']}", 3600)
    seconds["candidates"] = time.perf_counter() - started
    peaks = {"candidates": memory.take_peak()}
    started = time.perf_counter()
    judgements, rewrites = rate_everything(rule, raters, tags, seed=number)
    seconds["rating"] = time.perf_counter() - started
    started = time.perf_counter()
    body = {
        "algorithm": args.algorithm,
        "preset": args.preset,
        "overrides": json.loads(args.overrides),
    }
    round_id = admin.call("POST", "/api/rounds", json=body)["round_id"]
    state = admin.wait_for(
        f"/api/rounds/{round_id}",
        3600,
        every=1.0,
        on_poll=functools.partial(record_stage_peak, memory, peaks),
    )
    seconds["round"] = time.perf_counter() - started
    seconds.update({f"stage_{stage}": value for stage, value in state["timings"].items()})
    version = state["policy_version"]
    version_id = next(m["id"] for m in admin.call("GET", "/api/models") if m["name"] == version)
    admin.call("POST", f"/api/models/{version_id}/promote")
    metrics = state["metrics"]
    return {
        "round": number,
        "version": version,
        "judgements": judgements,
        "rewrites": rewrites,
        "snapshot_judgements": state["judgement_count"],
        "train_pairs": metrics["snapshot"]["train_pairs"],
        "rm_eval_accuracy": metrics["reward_model"]["eval_accuracy"],
        "evaluation": {k: v for k, v in metrics["evaluation"].items() if k != "samples"},
        "ab_job": metrics["register"]["ab_job"],
        "seconds": seconds,
        "peak_rss_mb": peaks,
    }


def record_stage_peak(memory: TreeMemory, peaks: dict, state: dict) -> None:
    """Charge the peak RSS (MiB) since the last poll to the stage the round is in now (a
    stage boundary blurs by one poll)."""
    stage = state["stage"] or "queued"
    peaks[stage] = max(peaks.get(stage, 0.0), memory.take_peak())


def answer_held_out(admin: Api, held_out: list[dict], version: str) -> dict:
    """{(model, prompt index, seed): text}, 32 requests in flight (an engine batch) at a time."""
    requests = [
        (model, index, seed)
        for model in (version, "base")
        for index in range(len(held_out))
        for seed in SEEDS
    ]

    def answer(request: tuple) -> tuple:
        model, index, seed = request
        body = {"model": model, "messages": held_out[index]["messages"], "seed": seed, **SERVED}
        reply = admin.call("POST", "/v1/chat/completions", json=body)
        return request, reply["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(max_workers=32) as pool:
        return dict(pool.map(answer, requests))


def judge_held_out(rule: Rule, held_out: list[dict], answers: dict) -> dict:
    version = next(model for model, _, _ in answers if model != "base")
    return judge(
        rule,
        [
            Comparison(
                index,
                prompt["tags"],
                answers[(version, index, seed)],
                answers[("base", index, seed)],
            )
            for index, prompt in enumerate(held_out)
            for seed in SEEDS
        ],
    )


def held_out_kl(folder: Path, held_out: list[dict], answers: dict) -> float:
    """KL(aligned || base) per answer on the aligned version's held-out answers, computed
    here after the server has stopped (so it is not part of the server's memory)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    version = next(model_name for model_name, _, _ in answers if model_name != "base")
    by_seed = {
        seed: [answers[(version, index, seed)] for index in range(len(held_out))] for seed in SEEDS
    }
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return kl_to_base(model, tokenizer, pad_id, held_out, by_seed)


# --- the report ----------------------------------------------------------------------------------


def table(results: list[RuleResult]) -> str:
    lines = [
        "| rule (kind) | win rate over base [95% CI] | base rate → aligned | unjudged prompts "
        "meeting it | KL | RM accuracy (per round) | judgements (rewrites) | round minutes (per "
        "round) | peak RSS: rounds, serving | idle RSS | distinct-2 ratio: all answers, answers "
        "meeting the rule | empty |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        held = result.held_out
        minutes = ", ".join(
            f"{r['seconds']['candidates'] / 60 + r['seconds']['round'] / 60:.1f}"
            for r in result.rounds
        )
        accuracy = ", ".join(
            f"{r['rm_eval_accuracy']:.2f}"
            for r in result.rounds
            if r["rm_eval_accuracy"] is not None
        )
        others = "" if held["others_meet"] is None else f"{held['others_meet']:.2f}"
        ratio = held["meeting_distinct2_ratio"]
        like_for_like = "too few" if ratio is None else f"{ratio:.2f}"
        judgements = sum(r["judgements"] for r in result.rounds)
        rewrites = sum(r["rewrites"] for r in result.rounds)
        lines.append(
            f"| {result.rule} ({result.kind}) | **{held['win_rate']:.2f}** "
            f"[{held['low']:.2f}, {held['high']:.2f}] n={held['n']} | "
            f"{held['base_rate']:.2f} → {held['aligned_rate']:.2f} | {others} | "
            f"{held['kl_to_base']:.1f} | {accuracy} | {judgements} ({rewrites}) | {minutes} | "
            f"{result.peak_rss_mb / 1024:.2f}, {result.serving_peak_rss_mb / 1024:.2f} GiB | "
            f"{result.idle_rss_mb / 1024:.2f} GiB | "
            f"{held['distinct2'] / held['base_distinct2']:.2f}, {like_for_like} | "
            f"{held['empty']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--algorithm", default="dpo", choices=["ppo", "rloo", "dpo"])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--prompts-per-round", type=int, default=48)
    parser.add_argument("--overrides", default="{}", help="JSON, as POST /api/rounds takes it")
    parser.add_argument(
        "--base",
        type=Path,
        help="a converted model folder to start from "
        "(default: the bundled model); for a quick check of the machinery",
    )
    args = parser.parse_args()
    load_base()  # convert the bundled model once, outside any measurement
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    results = []
    for name in args.rules.split(","):
        result = run_rule(RULES[name], args)
        results.append(result)
        record = {"args": vars(args), "date": stamp, **result.__dict__}
        with (RESULTS / f"{stamp}.jsonl").open("a") as out:
            out.write(json.dumps(record, default=str) + "\n")
        print(json.dumps(record, default=str), flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
