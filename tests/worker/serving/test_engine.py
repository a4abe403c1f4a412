"""The generation engine: continuous batching that changes nothing about what is generated."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
import torch
from transformers import LlamaForCausalLM

from tests.conftest import make_settings
from worker.base_models import tiny_random_config
from worker.model_store import ModelStore
from worker.serving.engine import (
    Generation,
    GenerationEngine,
    Sampling,
    length_groups,
    penalised,
    sample_tokens,
)

PROMPTS = ["Hello there", "Tell me a story about a fox", "2 + 2 =", "Name three colours"]
GREEDY = Sampling(max_new_tokens=12, temperature=0)


@pytest.fixture(scope="module")
def model_and_tokenizer(tmp_path_factory, bundled_tokenizer_dir):
    """The tiny model with livelier weights: its usual initialisation answers every prompt
    greedily with the same newline, which would make output comparisons say nothing."""
    store = ModelStore(make_settings(tmp_path_factory.mktemp("engine")))
    shutil.copytree(bundled_tokenizer_dir, store.tokenizer_cache)
    tokenizer = store.bundled_tokenizer()
    config = tiny_random_config(tokenizer)
    config.initializer_range = 0.2
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), tokenizer


@pytest.fixture
def engine(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    engine = GenerationEngine(model, tokenizer, name="tiny")
    yield engine
    engine.close(drain=False)


def chat(engine, text: str) -> list[int]:
    return engine.encode_chat([{"role": "user", "content": text}])


def reference(model_and_tokenizer, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    model, tokenizer = model_and_tokenizer
    output = model.generate(
        torch.tensor([prompt_ids]),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    return output[0, len(prompt_ids) :].tolist()


def test_greedy_output_matches_generate_alone_and_when_joining_a_running_batch(
    engine, model_and_tokenizer
):
    _, tokenizer = model_and_tokenizer
    expected = [
        tokenizer.decode(
            reference(model_and_tokenizer, chat(engine, text), 12), skip_special_tokens=True
        )
        for text in PROMPTS
    ]
    assert len(set(expected)) == len(PROMPTS)  # the comparison below can tell them apart
    staggered = []
    for text in PROMPTS:  # each joins while the earlier ones are running
        staggered.append(engine.submit(chat(engine, text), GREEDY))
        time.sleep(0.01)
    assert [generation.wait(30).text for generation in staggered] == expected


def test_a_seeded_request_is_repeatable_whatever_shares_its_batch(engine):
    seeded = Sampling(max_new_tokens=10, temperature=1.0, seed=42)
    alone = engine.submit(chat(engine, PROMPTS[1]), seeded).wait(30).text
    crowd = [engine.submit(chat(engine, text), Sampling(max_new_tokens=10)) for text in PROMPTS]
    again = engine.submit(chat(engine, PROMPTS[1]), seeded).wait(30).text
    for generation in crowd:
        generation.wait(30)
    assert again == alone


def text_collector(deltas: list[str]):
    """An `on_text` callback that keeps the text deltas."""
    return lambda text, _logprobs: deltas.append(text)


def test_streamed_deltas_add_up_to_the_text(engine):
    deltas: list[str] = []
    completion = engine.submit(
        chat(engine, PROMPTS[0]),
        Sampling(max_new_tokens=15, seed=1),
        on_text=text_collector(deltas),
    ).wait(30)
    assert "".join(deltas) == completion.text
    assert completion.completion_tokens <= 15 and completion.prompt_tokens > 0


def test_a_stop_string_ends_the_text_before_it(engine):
    free = engine.submit(chat(engine, PROMPTS[2]), GREEDY).wait(30).text
    stop = free[len(free) // 2 : len(free) // 2 + 3]
    deltas: list[str] = []
    stopped = engine.submit(
        chat(engine, PROMPTS[2]),
        Sampling(max_new_tokens=12, temperature=0, stop=(stop,)),
        on_text=text_collector(deltas),
    ).wait(30)
    assert stopped.finish_reason == "stop"
    assert stopped.text == free[: free.index(stop)]
    assert "".join(deltas) == stopped.text  # the stop string itself was never streamed


def test_length_cancel_and_context_limits(engine):
    long = engine.submit(chat(engine, PROMPTS[0]), Sampling(max_new_tokens=1000, seed=3))
    short = engine.submit(chat(engine, PROMPTS[0]), Sampling(max_new_tokens=3, seed=3)).wait(30)
    assert short.finish_reason == "length" and short.completion_tokens == 3
    long.cancel()
    assert long.wait(30).finish_reason == "cancelled"
    with pytest.raises(ValueError, match="context"):
        engine.submit(chat(engine, PROMPTS[0]), Sampling(max_new_tokens=engine.context_length))
    assert engine.busy == 0


def test_closing_with_drain_finishes_running_requests(model_and_tokenizer):
    engine = GenerationEngine(*model_and_tokenizer, name="closing")
    running = [engine.submit(chat(engine, text), GREEDY) for text in PROMPTS]
    closer = threading.Thread(target=engine.close)
    closer.start()
    closer.join(30)
    assert all(generation.wait(1).finish_reason in {"stop", "length"} for generation in running)
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(chat(engine, PROMPTS[0]), GREEDY)


def test_sampling_filters_pick_the_best_token_when_narrowed():
    logits = torch.tensor([[0.1, 3.0, 0.2, 2.9], [5.0, 0.0, 0.0, 4.9]])
    generators = [torch.Generator().manual_seed(index) for index in range(2)]
    narrow = [Sampling(temperature=1.0, top_k=1), Sampling(temperature=1.0, top_p=0.01)]
    assert sample_tokens(logits, narrow, generators).tolist() == [1, 0]
    greedy = [Sampling(temperature=0), Sampling(temperature=0)]
    assert sample_tokens(logits, greedy, generators).tolist() == [1, 0]


def test_sampling_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    generator = torch.Generator().manual_seed(0)
    draws = [
        sample_tokens(logits, [Sampling(temperature=1.0)], [generator]).item() for _ in range(2000)
    ]
    share = [draws.count(token) / len(draws) for token in range(3)]
    assert share == pytest.approx([0.7, 0.2, 0.1], abs=0.04)


def test_min_new_tokens_holds_back_the_end_of_turn(engine):
    eos = min(engine.eos_ids)
    engine.model.lm_head.weight.data[eos] += 50.0  # make the end of turn overwhelmingly likely
    try:
        held = engine.submit(
            chat(engine, PROMPTS[0]), Sampling(max_new_tokens=6, min_new_tokens=4, temperature=0)
        ).wait(30)
        free = engine.submit(chat(engine, PROMPTS[0]), Sampling(max_new_tokens=6, temperature=0))
        assert free.wait(30).completion_tokens == 1
        assert held.completion_tokens == 5 and held.finish_reason == "stop"
    finally:
        engine.model.lm_head.weight.data[eos] -= 50.0


def test_a_seed_torch_cannot_take_is_refused_before_it_joins_a_batch(engine):
    running = engine.submit(chat(engine, PROMPTS[1]), Sampling(max_new_tokens=20, seed=1))
    for seed in (2**70, -(2**70)):
        with pytest.raises(ValueError, match="seed"):
            engine.submit(chat(engine, PROMPTS[0]), Sampling(max_new_tokens=4, seed=seed))
    with pytest.raises(ValueError, match="token ids"):
        engine.submit([engine.vocab_size], GREEDY)
    assert running.wait(30).finish_reason in {"stop", "length"}
    assert engine.busy == 0


def test_a_request_that_fails_its_prefill_fails_alone(engine):
    """Arrivals prefilled together are retried one by one when their prefill fails."""
    healthy = [engine.submit(chat(engine, text), GREEDY) for text in PROMPTS[:2]]
    broken = Generation([engine.vocab_size + 5], GREEDY, None, torch.Generator())
    engine._waiting.put(broken)  # past `submit`'s checks, as a bug there would let it
    late = engine.submit(chat(engine, PROMPTS[2]), GREEDY)
    with pytest.raises(RuntimeError, match="failed"):
        broken.wait(30)
    assert all(g.wait(30).finish_reason in {"stop", "length"} for g in [*healthy, late])


def test_a_request_whose_text_callback_raises_leaves_the_batch_running(engine):
    def explode(_: str) -> None:
        raise RuntimeError("the client's event loop is gone")

    neighbour = engine.submit(chat(engine, PROMPTS[1]), Sampling(max_new_tokens=16, seed=2))
    doomed = engine.submit(
        chat(engine, PROMPTS[0]), Sampling(max_new_tokens=16, min_new_tokens=4, seed=2), explode
    )
    with pytest.raises(RuntimeError):
        doomed.wait(30)
    assert neighbour.wait(30).finish_reason in {"stop", "length"}
    assert engine.submit(chat(engine, PROMPTS[2]), GREEDY).wait(30).text is not None


def test_answers_to_one_prompt_share_its_prefill_and_match_answering_it_alone(engine):
    prompt = chat(engine, PROMPTS[1])
    alone = engine.submit(prompt, Sampling(max_new_tokens=10, seed=5)).wait(30)
    together = [engine.submit(prompt, Sampling(max_new_tokens=10, seed=seed)) for seed in (5, 5, 6)]
    first, second, other = (generation.wait(30) for generation in together)
    assert first.token_ids == second.token_ids == alone.token_ids
    assert other.token_ids != first.token_ids


def test_prefill_groups_hold_prompts_of_similar_length():
    lengths = [3, 40, 4, 100, 45, 5]
    arrivals = [Generation([1] * n, GREEDY, None, torch.Generator()) for n in lengths]
    groups = [[len(g.prompt_ids) for g in group] for group in length_groups(arrivals)]
    assert groups == [[3], [4, 5], [40, 45], [100]]


def test_penalties_follow_openai_definition_and_bias_adds_to_logits():
    logits = torch.zeros(4)
    sampling = Sampling(presence_penalty=0.5, frequency_penalty=0.25, logit_bias=((3, -100.0),))
    # token 1 generated twice, token 2 once: 2 * 0.25 + 0.5 and 1 * 0.25 + 0.5
    assert penalised(logits, [1, 2, 1], sampling).tolist() == [0.0, -1.0, -0.75, -100.0]
    assert penalised(logits, [1], Sampling()).tolist() == [0.0, 0.0, 0.0, 0.0]


def test_a_logit_bias_of_100_forces_its_token_and_a_bad_id_is_refused(engine, model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    token = tokenizer.convert_tokens_to_ids("Hello")
    forced = Sampling(max_new_tokens=4, seed=5, logit_bias=((token, 100.0),))
    completion = engine.submit(chat(engine, PROMPTS[0]), forced).wait(30)
    assert completion.token_ids == (token,) * 4
    with pytest.raises(ValueError, match="logit_bias"):
        engine.submit(chat(engine, PROMPTS[0]), Sampling(logit_bias=((engine.vocab_size, 1.0),)))


def test_logprobs_give_each_token_its_alternatives_whole_and_streamed(engine):
    streamed = []
    completion = engine.submit(
        chat(engine, PROMPTS[1]),
        Sampling(max_new_tokens=8, temperature=0, logprobs=3),
        on_text=lambda _text, logprobs: streamed.extend(logprobs),
    ).wait(30)
    tokens = [token for token in completion.token_ids if token not in engine.eos_ids]
    assert len(completion.logprobs) == len(tokens) and list(completion.logprobs) == streamed
    for entry in completion.logprobs:
        values = [value for _, value in entry.top]
        assert len(values) == 3 and values == sorted(values, reverse=True)
        assert entry.logprob == pytest.approx(values[0])  # greedy takes the likeliest
        assert entry.top[0][0] == entry.token and entry.logprob <= 0
    plain = engine.submit(chat(engine, PROMPTS[1]), Sampling(max_new_tokens=8, temperature=0))
    assert plain.wait(30).logprobs == () and plain.completion.text == completion.text
