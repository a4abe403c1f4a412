"""Serving throughput: concurrent streaming clients on `/v1` against plain `model.generate`.

The reference is the same requests (same prompts, same number of new tokens, same sampling)
served one at a time by `model.generate` in this process; then `alignloop web` serves them to
16 concurrent streaming clients through its batching engine. Both halves run in one invocation,
one after the other, on the same machine and the same converted model, and the figure to track
is their ratio: aggregate generated tokens per second, serving over reference. Time to first
token (TTFT) is measured at the clients, from sending the request to the first text chunk.

    .venv/bin/python bench/serving.py [--clients 16] [--tokens 64] [--rounds 3] [--model bundled]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from bench/: make `tests` importable
from harness import machine  # noqa: E402  (bench/harness.py, next to this file)

from tests.live_server import free_port, wait_for  # noqa: E402

TARGET_RATIO = 4.0
PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a bicycle's gears work to a ten-year-old.",
    "Describe a walk through a busy market in the early morning.",
    "What should a beginner know before planting a vegetable garden?",
    "Write a letter to a friend describing your last holiday.",
    "Explain why the sky is blue, step by step.",
    "Give advice to someone starting their first job in an office.",
    "Describe how bread is made, from flour to loaf.",
    "Tell the story of a cat who learns to open doors.",
    "Explain what a computer's memory is used for.",
    "Describe the changes of the seasons in a temperate forest.",
    "Write a speech for the opening of a small-town library.",
    "Explain how to prepare for a long hike in the mountains.",
    "Describe a day in the life of a ship's cook.",
    "Explain the rules of chess to someone who has never played.",
    "Write a product description for a handmade wooden chair.",
]
SAMPLING = {"temperature": 0.7, "top_p": 0.95}


def prepare(data_dir: Path, model: str) -> tuple[dict[str, str], str]:
    """A SQLite database with the model as version `base` and an API key; returns the server's
    environment and the key. The converted model stays in `data_dir` for the next run."""
    from app import migrate
    from app.config import Settings
    from app.db import engine_for, make_session_factory, session_scope
    from app.domain import accounts
    from app.models import KeyScope, Role
    from worker.model_store import ModelStore

    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("ALIGNLOOP_")},
        "ALIGNLOOP_DATA_DIR": str(data_dir),
        "ALIGNLOOP_BASE_MODEL": model,
        "ALIGNLOOP_DATABASE_URL": f"sqlite:///{data_dir / f'bench-{secrets.token_hex(4)}.db'}",
        "ALIGNLOOP_SECRET_KEY": secrets.token_urlsafe(48),
        "ALIGNLOOP_DEVICE": "cpu",
        "ALIGNLOOP_LOG_LEVEL": "WARNING",
    }
    settings = Settings(
        _env_file=None,
        data_dir=data_dir,
        base_model=model,
        database_url=env["ALIGNLOOP_DATABASE_URL"],
        device="cpu",
    )
    engine = engine_for(settings)
    migrate.upgrade(engine)
    factory = make_session_factory(engine)
    ModelStore(settings).ensure_base_version(factory)
    with session_scope(factory) as db:
        user = accounts.create_user(
            db, username="bench", password="long enough pw", role=Role.RATER
        )
        _, key = accounts.create_api_key(db, user=user, name="bench", scope=KeyScope.INFERENCE)
    engine.dispose()
    return env, key


def reference(data_dir: Path, model: str, requests: int, tokens: int) -> dict[str, float]:
    """The same requests, one at a time, with `model.generate`."""
    from app.config import Settings
    from worker.model_store import ModelStore

    store = ModelStore(Settings(_env_file=None, data_dir=data_dir, base_model=model, device="cpu"))
    lm, tokenizer = store.load("base", torch.device("cpu"))
    torch.manual_seed(0)
    generate_one(lm, tokenizer, "Hello", 4)  # warm-up, as the server gets one
    generated, started = 0, time.perf_counter()
    for prompt in PROMPTS[:requests]:
        generated += generate_one(lm, tokenizer, prompt, tokens)
    seconds = time.perf_counter() - started
    return {"tokens": generated, "seconds": seconds, "tokens_per_s": generated / seconds}


def generate_one(lm, tokenizer, prompt: str, tokens: int) -> int:
    """Generate exactly `tokens` new tokens for `prompt`; returns how many were generated."""
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = lm.generate(
        **inputs,
        do_sample=True,
        max_new_tokens=tokens,
        min_new_tokens=tokens,
        pad_token_id=tokenizer.pad_token_id,
        **SAMPLING,
    )
    return output.shape[1] - inputs["input_ids"].shape[1]


async def one_request(client: httpx.AsyncClient, prompt: str, tokens: int) -> tuple[float, int]:
    """Stream one completion; returns (time to first token, completion tokens)."""
    body = {
        "model": "base",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "min_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        **SAMPLING,
    }
    started = time.perf_counter()
    first_token, usage = None, 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[len("data: ") :])
            if chunk.get("usage"):
                usage = chunk["usage"]["completion_tokens"]
            elif first_token is None and chunk["choices"][0]["delta"].get("content"):
                first_token = time.perf_counter() - started
    return first_token, usage


async def serve(base_url: str, key: str, clients: int, tokens: int, rounds: int) -> dict:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=600, limits=limits
    ) as client:
        await one_request(client, "Hello", 4)  # loads the model into the server
        ttfts, generated, seconds = [], 0, 0.0
        for _ in range(rounds):
            started = time.perf_counter()
            results = await asyncio.gather(
                *(
                    one_request(client, PROMPTS[index % len(PROMPTS)], tokens)
                    for index in range(clients)
                )
            )
            seconds += time.perf_counter() - started
            ttfts += [ttft for ttft, _ in results]
            generated += sum(count for _, count in results)
    return {
        "tokens": generated,
        "seconds": seconds,
        "tokens_per_s": generated / seconds,
        "ttft_p50": statistics.median(ttfts),
        "ttft_p99": percentile(ttfts, 0.99),
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run_server(env: dict[str, str], log: Path):
    port = free_port()
    command = [sys.executable, "-m", "app.cli", "web", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=output, stderr=output)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 120, "the server")
    return process, url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--data-dir", type=Path, default=REPO / ".cache" / "bench-serving")
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    print(f"preparing {args.model} in {args.data_dir} ...", flush=True)
    env, key = prepare(args.data_dir, args.model)
    print(f"reference: {args.clients} requests one at a time with model.generate ...", flush=True)
    plain = reference(args.data_dir, args.model, args.clients, args.tokens)
    print(
        f"serving: {args.clients} concurrent streaming clients x {args.rounds} rounds ...",
        flush=True,
    )
    process, url = run_server(env, args.data_dir / "server.log")
    try:
        served = asyncio.run(serve(url, key, args.clients, args.tokens, args.rounds))
    finally:
        process.terminate()
        process.wait(30)
    ratio = served["tokens_per_s"] / plain["tokens_per_s"]
    verdict = "met" if ratio >= TARGET_RATIO else "NOT MET"
    print(f"\nmachine: {machine()}")
    print(
        f"reference  {plain['tokens_per_s']:7.1f} tok/s  ({plain['tokens']} tokens, "
        f"{plain['seconds']:.1f} s)"
    )
    print(
        f"serving    {served['tokens_per_s']:7.1f} tok/s  ({served['tokens']} tokens, "
        f"{served['seconds']:.1f} s)"
    )
    print(f"ratio {ratio:.2f} (target >= {TARGET_RATIO}) -> {verdict}")
    print(f"TTFT p50 {served['ttft_p50'] * 1000:.0f} ms, p99 {served['ttft_p99'] * 1000:.0f} ms")
    print("\nRESULTS.md line:")
    print(
        f"| {datetime.now(UTC):%Y-%m-%d %H:%M} | {args.model}, {args.clients} clients x "
        f"{args.tokens} tokens x {args.rounds} rounds | {plain['tokens_per_s']:.1f} | "
        f"{served['tokens_per_s']:.1f} | **{ratio:.2f}** | {served['ttft_p50'] * 1000:.0f} | "
        f"{served['ttft_p99'] * 1000:.0f} | {verdict.lower()} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
