"""The generation engine: continuous batching over one loaded model, with streaming and cancel.

One background thread owns the model. At every decoding step it first admits the requests that
arrived meanwhile (prefilled together, left-padded) into the running batch, so a new request
never waits for the others to finish; then it decodes one token for every running sequence and
lets finished or cancelled ones leave at once. The KV cache is the model's own `DynamicCache`
in left-padded layout, the same layout as `model.generate` uses for a batch; rows are merged,
dropped and trimmed by editing its tensors.

Sampling is per request: temperature, top-p, top-k, stop strings, a token limit, a seed,
OpenAI's presence and frequency penalties and logit bias, and on request each sampled token's
log-probability with its most likely alternatives.
The random draws come from the request's own generator (an exponential race, the same
distribution as Gumbel-max), so a seeded request gets the same tokens whatever else shares its
batch, up to floating-point noise.

One request never fails another. A request is checked whole in `submit` (its sampling, its
seed, its token ids) before it can join a batch. Arrivals that fail their prefill together are
prefilled again one by one, so only the one that fails alone is failed; a row whose own
bookkeeping fails (decoding, its text callback) leaves the batch alone. Only an error in the
batch's shared decoding step, which no single request can be blamed for, fails the batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.5


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 1.0
    """0 means greedy."""
    top_p: float = 1.0
    top_k: int = 0
    """0 means no top-k cut."""
    stop: tuple[str, ...] = ()
    seed: int | None = None
    min_new_tokens: int = 0
    """The end-of-turn token is not allowed before this many tokens."""
    presence_penalty: float = 0.0
    """OpenAI's: subtracted once from the logit of every token generated so far."""
    frequency_penalty: float = 0.0
    """OpenAI's: subtracted from a token's logit once for every time it was generated."""
    logit_bias: tuple[tuple[int, float], ...] = ()
    """(token id, bias) pairs added to the logits before sampling."""
    logprobs: int | None = None
    """None: no log-probabilities; k >= 0: each sampled token's, with its k most likely
    alternatives."""

    @property
    def shifts_logits(self) -> bool:
        """Whether penalties or a bias change the logits before sampling."""
        return bool(self.presence_penalty or self.frequency_penalty or self.logit_bias)


@dataclass(frozen=True)
class TokenLogprob:
    """A sampled token's log-probability and its most likely alternatives, from the model's
    raw distribution (before temperature, penalties and bias, as vLLM reports them)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


TextCallback = Callable[[str, tuple[TokenLogprob, ...]], None]
"""Hears each text delta with the log-probabilities of the tokens it completes (empty unless
asked for)."""


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str
    """`stop` (end of turn or a stop string), `length`, `cancelled` or `error`."""
    prompt_tokens: int
    completion_tokens: int
    first_token_at: float | None = None
    """`time.perf_counter()` when the first token was produced."""
    token_ids: tuple[int, ...] = ()
    """The sampled tokens, the end-of-turn token included when it ended the answer (what a
    policy-gradient step scores)."""
    logprobs: tuple[TokenLogprob, ...] = ()
    """One per sampled token but the end of turn, when `Sampling.logprobs` asked for them."""


class Generation:
    """A submitted request. Thread-safe: wait for it, cancel it, or read `completion`."""

    def __init__(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        on_text: TextCallback | None,
        generator: torch.Generator,
    ) -> None:
        self.prompt_ids = prompt_ids
        self.sampling = sampling
        self.on_text = on_text
        self.generator = generator
        """The request's own random numbers, seeded (or not) when it was submitted."""
        self.completion: Completion | None = None
        self.error: BaseException | None = None
        self._cancelled = threading.Event()
        self._done = threading.Event()
        self._callbacks: list[Callable[[Generation], None]] = []
        self._lock = threading.Lock()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait_done(self, timeout: float | None = None) -> bool:
        """Block until finished or `timeout`; True when finished."""
        return self._done.wait(timeout)

    def wait(self, timeout: float | None = None) -> Completion:
        if not self._done.wait(timeout):
            raise TimeoutError("generation still running")
        if self.completion is None:
            raise RuntimeError("generation failed") from self.error
        return self.completion

    def add_done_callback(self, callback: Callable[[Generation], None]) -> None:
        """Call `callback(self)` once finished (at once if it already is), from any thread."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        callback(self)

    def _finish(self, completion: Completion | None, error: BaseException | None = None) -> None:
        with self._lock:
            self.completion, self.error = completion, error
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)


@dataclass
class _Row:
    """One running sequence of the batch."""

    generation: Generation
    position: int  # position id of the token fed at the next step (the last one sampled)
    tokens: list[int] = field(default_factory=list)
    generated: int = 0  # tokens sampled, the end-of-turn token included
    emitted: int = 0  # characters of text already handed to on_text
    logprobs: list[TokenLogprob] = field(default_factory=list)
    logprobs_emitted: int = 0  # entries of `logprobs` already handed to on_text
    first_token_at: float | None = None


class GenerationEngine:
    """Serves one model; `submit` from any thread, `close` when done."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_batch_size: int = 32,
        name: str = "",
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.max_batch_size = max_batch_size
        self.device = model.device
        self.context_length = int(getattr(model.config, "max_position_embeddings", 2048))
        self.vocab_size = model.get_input_embeddings().num_embeddings
        eos = model.generation_config.eos_token_id or tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        )
        self._waiting: queue.Queue[Generation] = queue.Queue()
        self._admission = threading.Lock()  # held while a group is queued or admitted
        self._rows: list[_Row] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # (B, T): 1 for real tokens, 0 for left padding
        self._last_tokens: torch.Tensor | None = None  # (B, 1)
        self._unfinished = 0
        self._count_lock = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)
        self._thread.start()

    # --- public ---------------------------------------------------------------------------

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Token ids of a conversation in the model's chat template, ready for the reply."""
        return list(
            self.tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )

    def submit(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        on_text: TextCallback | None = None,
    ) -> Generation:
        """Queue a request; `on_text` receives text deltas on the engine's thread. A request
        that cannot run raises `ValueError` here, before it can join (and harm) a batch."""
        if self._closing.is_set():
            raise RuntimeError(f"engine {self.name} is closed")
        self._check_prompt(prompt_ids, sampling)
        generation = Generation(
            list(prompt_ids), sampling, on_text, _generator(sampling, self.device)
        )
        with self._count_lock:
            self._unfinished += 1
        generation.add_done_callback(self._count_finished)
        self._waiting.put(generation)
        return generation

    def submit_many(self, requests: Sequence[tuple[list[int], Sampling]]) -> list[Generation]:
        """Queue `(prompt ids, sampling)` requests as one arrival, admitted in this order
        whatever the engine is doing meanwhile (so a seeded batch job is repeatable). If one
        is refused, none of them runs."""
        generations: list[Generation] = []
        with self._admission:
            try:
                for prompt_ids, sampling in requests:
                    generations.append(self.submit(prompt_ids, sampling))
            except ValueError:
                for generation in generations:
                    generation.cancel()
                raise
        return generations

    def encode_text(self, prompt: str) -> list[int]:
        """Token ids of a plain-text prompt, with the tokenizer's usual special tokens."""
        return list(self.tokenizer(prompt)["input_ids"])

    def _check_prompt(self, prompt_ids: list[int], sampling: Sampling) -> None:
        if not prompt_ids:
            raise ValueError("empty prompt")
        if not all(isinstance(token, int) and 0 <= token < self.vocab_size for token in prompt_ids):
            raise ValueError(f"prompt token ids must lie in 0..{self.vocab_size - 1}")
        if any(not 0 <= token < self.vocab_size for token, _ in sampling.logit_bias):
            raise ValueError(f"logit_bias token ids must lie in 0..{self.vocab_size - 1}")
        if len(prompt_ids) + sampling.max_new_tokens > self.context_length:
            raise ValueError(
                f"prompt ({len(prompt_ids)} tokens) plus max_tokens ({sampling.max_new_tokens}) "
                f"exceeds the model's context of {self.context_length} tokens"
            )

    def _count_finished(self, _: Generation) -> None:
        with self._count_lock:
            self._unfinished -= 1

    def generate(
        self,
        conversations: Sequence[Sequence[dict[str, str]]],
        sampling: Sampling,
        *,
        n: int = 1,
        on_progress: Callable[[float], None] | None = None,
    ) -> list[list[Completion]]:
        """`n` completions per conversation, blocking; all are submitted at once to batch.
        With a seed, completion j of conversation i samples with seed `seed + i * n + j`, so
        the whole call is repeatable. `on_progress` hears the finished fraction as
        conversations complete, in order."""
        prompts = [self.encode_chat(conversation) for conversation in conversations]
        submitted = self.submit_many(
            [
                (prompt, seeded(sampling, index * n + sample))
                for index, prompt in enumerate(prompts)
                for sample in range(n)
            ]
        )
        generations = [submitted[index * n : (index + 1) * n] for index in range(len(prompts))]
        results = []
        for index, group in enumerate(generations, start=1):
            results.append([generation.wait() for generation in group])
            if on_progress is not None:
                on_progress(index / len(generations))
        return results

    @property
    def busy(self) -> int:
        """Requests submitted and not finished yet."""
        return self._unfinished

    def close(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking requests; with `drain`, finish the ones already submitted first."""
        self._closing.set()
        if not drain:
            for row in list(self._rows):
                row.generation.cancel()
        self._thread.join(timeout)

    # --- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                self._admit()
                if self._rows:
                    self._step()
                elif self._closing.is_set() and self._waiting.empty():
                    return
                else:
                    self._wait_for_work()
            except Exception as exc:  # the shared decoding step: no one request is to blame
                log.exception("engine %s: decoding step failed", self.name)
                self._fail_batch(exc)

    def _wait_for_work(self) -> None:
        try:
            generation = self._waiting.get(timeout=IDLE_WAIT_S)
        except queue.Empty:
            return
        self._waiting.put(generation)  # back in line; _admit takes it with the others

    def _admit(self) -> None:
        room = self.max_batch_size - len(self._rows)
        arrivals: list[Generation] = []
        with self._admission:
            while room > len(arrivals):
                try:
                    generation = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if generation.cancelled:
                    generation._finish(Completion("", "cancelled", len(generation.prompt_ids), 0))
                else:
                    arrivals.append(generation)
        for group in length_groups(arrivals):
            self._prefill_isolating_failures(group)

    def _prefill_isolating_failures(self, arrivals: list[Generation]) -> None:
        """Prefill `arrivals` together; if that fails, one by one, failing only the requests
        that fail on their own. The running batch is untouched by a failed prefill."""
        try:
            self._prefill(arrivals)
        except Exception as exc:
            if len(arrivals) > 1:
                log.warning(
                    "engine %s: prefill of %d failed, retrying one by one: %s",
                    self.name,
                    len(arrivals),
                    exc,
                )
                for generation in arrivals:
                    self._prefill_isolating_failures([generation])
                return
            log.exception("engine %s: a request failed its prefill", self.name)
            arrivals[0]._finish(None, exc)

    @torch.inference_mode()
    def _prefill(self, arrivals: list[Generation]) -> None:
        """Run the arrivals' prompts and sample their first tokens, then join them to the batch
        (nothing of the batch changes before the last step that can fail)."""
        # Arrivals with the same prompt (several answers to one question) share one run of it.
        unique: dict[tuple[int, ...], int] = {}
        for generation in arrivals:
            unique.setdefault(tuple(generation.prompt_ids), len(unique))
        owner = torch.tensor(
            [unique[tuple(generation.prompt_ids)] for generation in arrivals], device=self.device
        )
        length = max(len(prompt) for prompt in unique)
        ids = torch.full((len(unique), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(unique), length), dtype=torch.long)
        for index, prompt in enumerate(unique):
            ids[index, length - len(prompt) :] = torch.tensor(prompt)
            mask[index, length - len(prompt) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        output = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        for layer in cache.layers:  # (U, ...) -> (A, ...): each arrival gets its prompt's rows
            layer.keys = layer.keys.index_select(0, owner)
            layer.values = layer.values.index_select(0, owner)
        rows = [
            _Row(generation=generation, position=len(generation.prompt_ids))
            for generation in arrivals
        ]
        tokens = self._sample(output.logits[:, -1, :].index_select(0, owner), rows)
        self._merge(rows, cache, mask.index_select(0, owner))
        self._advance_rows(tokens, first_row=len(self._rows) - len(rows))

    @torch.inference_mode()
    def _step(self) -> None:
        mask = torch.cat([self._mask, self._mask.new_ones((len(self._rows), 1))], dim=1)
        positions = torch.tensor([[row.position] for row in self._rows], device=self.device)
        output = self.model(
            input_ids=self._last_tokens,
            attention_mask=mask,
            position_ids=positions,
            cache=self._cache,
            use_cache=True,
        )
        tokens = self._sample(output.logits[:, -1, :], self._rows)
        self._mask = mask
        for row in self._rows:
            row.position += 1
        self._advance_rows(tokens, first_row=0)

    def _sample(self, logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        """The next token (B,) of each of `rows`, from their last logits (B, V); rows that ask
        for log-probabilities get them recorded, from the logits as the model gave them."""
        raw = logits.float()
        wanted = any(row.generation.sampling.logprobs is not None for row in rows)
        logits = raw.clone() if wanted else raw
        for index, row in enumerate(rows):
            sampling = row.generation.sampling
            if row.generated < sampling.min_new_tokens:
                logits[index, list(self.eos_ids)] = float("-inf")
            if sampling.shifts_logits:
                logits[index] = penalised(logits[index], row.tokens, sampling)
        tokens = sample_tokens(
            logits,
            [row.generation.sampling for row in rows],
            [row.generation.generator for row in rows],
        )
        for index, row in enumerate(rows):
            if (top := row.generation.sampling.logprobs) is not None:
                token = int(tokens[index])
                if token not in self.eos_ids:
                    row.logprobs.append(self._token_logprob(raw[index], token, top))
        return tokens

    def _token_logprob(self, logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
        logprobs = logits.log_softmax(-1)  # (V,)
        best, ids = logprobs.topk(top)
        return TokenLogprob(
            token=self.tokenizer.decode([token]),
            logprob=float(logprobs[token]),
            top=tuple(
                (self.tokenizer.decode([id_]), value)
                for id_, value in zip(ids.tolist(), best.tolist(), strict=True)
            ),
        )

    def _advance_rows(self, tokens: torch.Tensor, *, first_row: int) -> None:
        """Record the sampled `tokens` of rows `first_row..`, emit text, retire finished rows.
        A row whose own bookkeeping raises is failed alone."""
        rows = self._rows[first_row:]
        now = time.perf_counter()
        new_last = tokens.view(-1, 1)
        if first_row == 0:
            self._last_tokens = new_last
        else:
            self._last_tokens = torch.cat([self._last_tokens[:first_row], new_last])
        finished: list[int] = []
        for offset, (row, token) in enumerate(zip(rows, tokens.tolist(), strict=True)):
            row.first_token_at = row.first_token_at or now
            row.generated += 1
            try:
                done = self._advance(row, token)
            except Exception as exc:
                log.exception("engine %s: a request failed while emitting its text", self.name)
                if not row.generation.done:
                    row.generation._finish(None, exc)
                done = True
            if done:
                finished.append(first_row + offset)
        for index, row in enumerate(self._rows):
            if row.generation.cancelled and index not in finished:
                self._complete(row, "cancelled", self._text(row))
                finished.append(index)
        if finished:
            self._drop(finished)

    def _advance(self, row: _Row, token: int) -> bool:
        """Record `token` for `row`; True when the row has finished."""
        sampling = row.generation.sampling
        if token in self.eos_ids:
            row.tokens.append(token)  # decoding skips it; the token ids keep it
            self._complete(row, "stop", self._text(row))
            return True
        row.tokens.append(token)
        text = self._text(row)
        for stop in sampling.stop:
            if (at := text.find(stop)) >= 0:
                self._complete(row, "stop", text[:at])
                return True
        if len(row.tokens) >= sampling.max_new_tokens:
            self._complete(row, "length", text)
            return True
        # Hold back an incomplete character and anything that could still become a stop string.
        hold = max((len(stop) - 1 for stop in sampling.stop), default=0)
        safe = len(text) - hold - (1 if text.endswith("\ufffd") else 0)
        self._emit(row, text, safe)
        return False

    def _text(self, row: _Row) -> str:
        return self.tokenizer.decode(row.tokens, skip_special_tokens=True)

    def _emit(self, row: _Row, text: str, upto: int, *, final: bool = False) -> None:
        """Hand `text[emitted:upto]` to the callback with the log-probabilities of the tokens
        it completes (all the rest when `final`)."""
        covered = len(row.logprobs) if final or upto >= len(text) else len(row.logprobs) - 1
        logprobs = tuple(row.logprobs[row.logprobs_emitted : max(covered, 0)])
        if (upto > row.emitted or logprobs) and row.generation.on_text is not None:
            row.generation.on_text(text[row.emitted : upto], logprobs)
        row.emitted = max(row.emitted, upto)
        row.logprobs_emitted += len(logprobs)

    def _complete(self, row: _Row, reason: str, text: str) -> None:
        self._emit(row, text, len(text), final=True)
        generation = row.generation
        generation._finish(
            Completion(
                text=text,
                finish_reason=reason,
                prompt_tokens=len(generation.prompt_ids),
                completion_tokens=row.generated,
                first_token_at=row.first_token_at,
                token_ids=tuple(row.tokens),
                logprobs=tuple(row.logprobs),
            )
        )

    # --- the batch's KV cache ---------------------------------------------------------------

    def _merge(self, rows: list[_Row], cache: DynamicCache, mask: torch.Tensor) -> None:
        """Append prefilled rows to the running batch, padding the shorter side on the left."""
        if not self._rows:
            self._rows, self._cache, self._mask = rows, cache, mask
            self._last_tokens = torch.empty((0, 1), dtype=torch.long, device=self.device)
            return
        width = max(self._mask.shape[1], mask.shape[1])
        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_pad_left(old.keys, width, 2), _pad_left(new.keys, width, 2)])
            old.values = torch.cat(
                [_pad_left(old.values, width, 2), _pad_left(new.values, width, 2)]
            )
        self._mask = torch.cat([_pad_left(self._mask, width, 1), _pad_left(mask, width, 1)])
        self._rows = self._rows + rows

    def _drop(self, indices: list[int]) -> None:
        """Remove finished rows, then cut columns that are padding in every remaining row."""
        gone = set(indices)
        keep = [index for index in range(len(self._rows)) if index not in gone]
        self._rows = [self._rows[index] for index in keep]
        if not keep:
            self._cache = self._mask = self._last_tokens = None
            return
        keep_tensor = torch.tensor(keep, device=self.device)
        self._mask = self._mask[keep_tensor]
        self._last_tokens = self._last_tokens[keep_tensor]
        start = int((self._mask.sum(0) == 0).long().cumprod(0).sum())  # leading all-pad columns
        self._mask = self._mask[:, start:]
        for layer in self._cache.layers:
            layer.keys = layer.keys[keep_tensor, :, start:]
            layer.values = layer.values[keep_tensor, :, start:]

    def _fail_batch(self, error: BaseException) -> None:
        for row in self._rows:
            if not row.generation.done:
                row.generation._finish(None, error)
        self._rows, self._cache, self._mask, self._last_tokens = [], None, None, None


def seeded(sampling: Sampling, offset: int) -> Sampling:
    """`sampling` with its seed moved on by `offset` (unseeded stays unseeded)."""
    if sampling.seed is None:
        return sampling
    return Sampling(**{**sampling.__dict__, "seed": sampling.seed + offset})


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _generator(sampling: Sampling, device: torch.device) -> torch.Generator:
    """The request's generator; a seed torch cannot take is the request's `ValueError`."""
    generator = torch.Generator(device=device)
    if sampling.seed is None:
        generator.seed()
        return generator
    try:
        return generator.manual_seed(sampling.seed)
    except (ValueError, RuntimeError, OverflowError, TypeError) as exc:
        raise ValueError(f"seed {sampling.seed} is out of range: {exc}") from None


def length_groups(arrivals: list[Generation], *, slack: float = 1.25) -> list[list[Generation]]:
    """Arrivals split into groups of similar prompt length (the longest at most `slack` times
    the shortest), so that a prefill spends little on left padding."""
    groups: list[list[Generation]] = []
    for generation in sorted(arrivals, key=lambda generation: len(generation.prompt_ids)):
        if groups and len(generation.prompt_ids) <= slack * len(groups[-1][0].prompt_ids):
            groups[-1].append(generation)
        else:
            groups.append([generation])
    return groups


def penalised(logits: torch.Tensor, generated: list[int], sampling: Sampling) -> torch.Tensor:
    """One row's logits (V,) with OpenAI's penalties and logit bias applied: a token generated
    c times so far loses `c * frequency_penalty + (c > 0) * presence_penalty`, as OpenAI's
    parameter guide defines them (the prompt's tokens do not count)."""
    if generated and (sampling.presence_penalty or sampling.frequency_penalty):
        counts = torch.bincount(
            torch.tensor(generated, device=logits.device), minlength=logits.shape[-1]
        )[: logits.shape[-1]].to(logits.dtype)
        logits = logits - counts * sampling.frequency_penalty
        logits = logits - (counts > 0).to(logits.dtype) * sampling.presence_penalty
    if sampling.logit_bias:
        ids, biases = zip(*sampling.logit_bias, strict=True)
        logits = logits.index_add(
            0,
            torch.tensor(ids, device=logits.device),
            torch.tensor(biases, device=logits.device, dtype=logits.dtype),
        )
    return logits


NUCLEUS_CANDIDATES = 1024
"""Tokens examined for a top-p or top-k cut before falling back to a full sort (a nucleus is
rarely wider; sorting a 50k vocabulary would be most of a decoding step's time on a CPU)."""


def sample_tokens(
    logits: torch.Tensor, samplings: Sequence[Sampling], generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """One token per row of `logits` (B, V): greedy, or temperature / top-k / top-p sampling
    by an exponential race, the token whose probability over its own Exp(1) draw is largest.

    The draws come from the row's own generator, one per token id at every step, so a seeded
    request draws the same numbers whatever shares its batch. A batch still changes the logits
    by float noise (other shapes, other kernels); a race is lost only when the two best scores
    lie within that noise, whereas an inverse-CDF draw on a nearly flat 50k distribution moved
    to the next token at almost every step."""
    device = logits.device
    temperature = torch.tensor(
        [max(sampling.temperature, 1e-5) for sampling in samplings], device=device
    ).unsqueeze(1)
    logprobs = (logits.float() / temperature).log_softmax(-1)  # (B, V)
    probs = logprobs.exp()
    cut = [
        index for index, sampling in enumerate(samplings) if sampling.top_p < 1 or sampling.top_k
    ]
    if cut:
        rows = torch.tensor(cut, device=device)
        kept, ids = _nucleus(logprobs[rows], [samplings[index] for index in cut])
        probs[rows] = torch.zeros_like(probs[rows]).scatter(1, ids, kept)
    sampled = (probs / _exponential_draws(probs, samplings, generators)).argmax(-1)
    greedy = torch.tensor([sampling.temperature <= 0 for sampling in samplings], device=device)
    return torch.where(greedy, logits.argmax(-1), sampled)


def _exponential_draws(
    probs: torch.Tensor, samplings: Sequence[Sampling], generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """Exp(1) draws (B, V) from each row's generator (ones for greedy rows, which use none),
    kept above 0 so that a token of probability 0 can never win. They are -log U of uniform
    draws: on a CPU `exponential_` takes six times as long."""
    uniform = torch.full_like(probs, 1 / torch.e)
    for index, (sampling, generator) in enumerate(zip(samplings, generators, strict=True)):
        if sampling.temperature > 0:
            uniform[index].uniform_(generator=generator)
    return uniform.log_().neg_().clamp_min_(torch.finfo(probs.dtype).tiny)


def _nucleus(
    logprobs: torch.Tensor, samplings: Sequence[Sampling]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows' most likely tokens, best first, as probabilities (B, W) that are 0 outside
    each row's top-k and top-p cut (the best token is always in), and their ids (B, W)."""
    vocabulary = logprobs.shape[-1]
    top_p = torch.tensor([sampling.top_p for sampling in samplings], device=logprobs.device)
    top_k = torch.tensor(
        [sampling.top_k or vocabulary for sampling in samplings], device=logprobs.device
    )
    widest_k = max((sampling.top_k for sampling in samplings), default=0)
    width = min(vocabulary, max(NUCLEUS_CANDIDATES, widest_k))
    best, ids = logprobs.topk(width, dim=-1)
    if width < vocabulary and ((best.exp().sum(-1) < top_p) & (top_k > width)).any():
        best, ids = logprobs.sort(dim=-1, descending=True)  # a nucleus wider than the candidates
    probs = best.exp()
    outside_p = (probs.cumsum(-1) - probs) > top_p.unsqueeze(1)
    outside_k = torch.arange(probs.shape[-1], device=probs.device) >= top_k.unsqueeze(1)
    return probs.masked_fill(outside_p | outside_k, 0.0), ids
