"""Backends: the HF path on a tiny random Qwen2, the OpenAI path against a real local HTTP server."""

from __future__ import annotations

import asyncio
import functools
import re

import openai
import pytest
import torch
from transformers import AutoModelForCausalLM

from dualdistill.backends import Backend, BackendConfig, BackendError, Completion, cut_at_stop, open_backend
from dualdistill.backends.hf import HFBackend
from dualdistill.backends.openai_api import OpenAIBackend
from dualdistill.format.trajectory import executor_block
from fake_openai_server import FakeOpenAIServer, Outcome


def make_backend(model: str, **options) -> Backend:
    """The backend ``model`` names, opened as every command opens it."""
    return open_backend(BackendConfig(model=model, **options), "paper")


PROMPTS = [
    "Compute 12 * 7.",
    "What is the remainder when 7^2024 is divided by 9? Find the number of integers.",
    "x",
    "def f(n):\n    return pow(2, n, 1000)\nprint(f(10**18))",
]


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def hf(tiny_model_dir):
    backend = HFBackend(tiny_model_dir, max_batch=16)
    yield backend
    backend.close()


def forced_code_end(tiny_model_dir, tokenizer, after: int) -> HFBackend:
    """A backend whose model emits ``</code>`` as its ``after``-th generated token after any prompt
    of the lengths used in the test: the real model's logits with one logit raised at that position."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    code_end = tokenizer.convert_tokens_to_ids("</code>")
    real_forward = model.forward
    prompt_lengths: set[int] = set()

    @functools.wraps(real_forward)  # keeps the signature, which the backend inspects
    def forward(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        # The engine packs its rows into one sequence and keeps the logits of each row's last token.
        pos = kwargs["position_ids"][0, kwargs["logits_to_keep"]]  # whose successor is predicted
        hit = torch.zeros_like(pos, dtype=torch.bool)
        for n in prompt_lengths:
            hit |= pos == n + after - 2
        out.logits[0, hit, code_end] += 1e4
        return out

    model.forward = forward
    backend = HFBackend.from_objects(model, tokenizer)
    backend.prompt_lengths = prompt_lengths  # the test registers the prompt lengths it uses
    return backend


@functools.cache
def fresh_model(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


def assert_slot_holds(backend: HFBackend, slot: int, context: str, model_dir) -> None:
    """The slot holds ``context``'s token ids first, and for every token it holds, every layer's keys
    and values are what a fresh forward pass of those tokens computes: no position was left from
    another sequence or copied from the wrong place (greedy texts of a tiny random model barely tell)."""
    cache = backend._engine.cache
    held = cache.held(slot).tolist()
    ids = backend.tokenizer.encode(context)
    assert held[: len(ids)] == ids
    with torch.inference_mode():
        fresh = fresh_model(model_dir)(input_ids=torch.tensor([held]), use_cache=True).past_key_values
    for layer, (keys, values) in enumerate(zip(cache.keys, cache.values, strict=True)):
        torch.testing.assert_close(
            keys[slot, :, : len(held)], fresh.layers[layer].keys[0], atol=1e-4, rtol=1e-4
        )
        torch.testing.assert_close(
            values[slot, :, : len(held)], fresh.layers[layer].values[0], atol=1e-4, rtol=1e-4
        )


# -- helpers ------------------------------------------------------------------------------------
def test_cut_at_stop_takes_the_earliest_and_longest():
    assert cut_at_stop("a</code>b</code>", ["</code>"]) == ("a</code>", "</code>")
    assert cut_at_stop("ab</answer>c</code>", ["</code>", "</answer>"]) == ("ab</answer>", "</answer>")
    assert cut_at_stop("x</code>", ["</", "</code>"]) == ("x</code>", "</code>")
    assert cut_at_stop("nothing", ["</code>"]) == ("nothing", None)


def test_make_backend_rejects_a_missing_directory(tmp_path):
    from dualdistill.core.records import DataError

    with pytest.raises(DataError, match="model not found"):
        make_backend(str(tmp_path / "nope"))
    with pytest.raises(DataError, match="not a model directory"):
        make_backend(str(tmp_path))


# -- HF backend ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "says"),
    [("http://127.0.0.1:8000/v1,127.0.0.1:8001/v1", "'127.0.0.1:8001/v1': needs http"),
     ("http://127.0.0.1:99999/v1", "Port out of range"), ("https:///v1", "needs http")],
)  # fmt: skip
def test_every_server_url_of_a_list_is_checked_at_load(spec, says):
    """A bad entry is named at once; it is never dropped while the job runs on the other servers."""
    from dualdistill.backends import BackendError

    with pytest.raises(BackendError, match=re.escape(says)):
        make_backend(spec)


def test_hf_generates_up_to_the_token_limit(hf):
    assert isinstance(hf, Backend)
    c = run(hf.complete(PROMPTS[0], max_new_tokens=12, stop=[], temperature=0.0))
    assert c.finish_reason == "length" and c.stop is None and c.n_tokens == 12
    assert c.text and 1 <= hf.count_tokens(c.text) <= 12
    stats = hf.stats()
    assert stats.generated_tokens == 12 and stats.requests == 1 and stats.gen_time_s > 0


def test_hf_stops_at_code_end_and_continues_after_executor(tiny_model_dir, tiny_tokenizer):
    backend = forced_code_end(tiny_model_dir, tiny_tokenizer, after=4)
    prompt = "Solve it with code. <code>\n"
    backend.prompt_lengths.add(len(tiny_tokenizer.encode(prompt)))
    first = run(backend.complete(prompt, max_new_tokens=50, stop=["</code>"], temperature=0.0))
    assert first.text.endswith("</code>") and first.text.count("</code>") == 1
    assert (first.finish_reason, first.stop, first.n_tokens) == ("stop", "</code>", 4)

    # The agent appends the executor output and asks for more: the model reads it and continues.
    continued = prompt + first.text + executor_block("42")
    n_prompt = len(tiny_tokenizer.encode(continued))
    backend.reset_stats()
    second = run(backend.complete(continued, max_new_tokens=6, stop=["</code>"], temperature=0.0))
    assert second.n_tokens >= 1 and second.text
    assert backend.stats().prompt_tokens == n_prompt
    # The continuation re-read only what the first call had not (prefix reuse) ...
    assert 0 < backend.stats().reused_tokens < n_prompt
    # ... and still reads like a full prefill: greedy text matches a backend without reuse, so the
    # executor text really reached the model.
    plain = HFBackend(tiny_model_dir, prefix_cache_tokens=0)
    assert run(plain.complete(continued, max_new_tokens=6, stop=[], temperature=0.0)).text.startswith(
        second.text.removesuffix("</code>")
    )
    backend.close()
    plain.close()


def test_hf_multi_token_stop_string_cuts_the_text(hf):
    full = run(hf.complete(PROMPTS[1], max_new_tokens=40, stop=[], temperature=1.0, seed=7))
    ascii_at = [i for i in range(5, len(full.text) - 3) if full.text[i : i + 3].isascii()]
    assert ascii_at, full.text
    stop = full.text[ascii_at[0] : ascii_at[0] + 3]
    cut = run(hf.complete(PROMPTS[1], max_new_tokens=40, stop=[stop], temperature=1.0, seed=7))
    assert (cut.finish_reason, cut.stop) == ("stop", stop)
    assert cut.text == full.text[: full.text.find(stop) + len(stop)]
    assert cut.n_tokens < full.n_tokens


def test_hf_seed_reproduces_and_differs(hf):
    def once(seed):
        return run(hf.complete(PROMPTS[0], max_new_tokens=20, stop=[], temperature=1.0, top_p=0.9, seed=seed))

    assert once(3).text == once(3).text
    assert once(3).text != once(4).text


async def _solo_and_batched(backend, requests):
    solo = [await backend.complete(**r) for r in requests]
    backend.reset_stats()
    batched = await asyncio.gather(*(backend.complete(**r) for r in requests))
    return solo, batched


def test_hf_batches_concurrent_requests_with_the_same_results(hf):
    requests = [
        dict(prompt=p, max_new_tokens=8 + 3 * i, stop=[], temperature=0.0 if i % 2 else 0.9, seed=i)
        for i, p in enumerate(PROMPTS * 2)
    ]
    solo, batched = run(_solo_and_batched(hf, requests))
    stats = hf.stats()
    assert stats.prefills < len(requests) and stats.max_active > 1
    assert stats.requests == len(requests)
    # Left padding and cache merging must not change any row's tokens.
    assert [c.text for c in batched] == [c.text for c in solo]
    assert [c.n_tokens for c in batched] == [r["max_new_tokens"] for r in requests]


def test_hf_clearing_keeps_the_cache_memory_and_never_reads_what_it_held(hf, tiny_model_dir):
    """``clear_prefix_cache`` forgets every sequence but keeps the KV buffers (no regrowth for the next
    requests). Positions at or past a slot's length are never read: with every buffer overwritten by
    large finite garbage after the clear, a batch of rows with different lengths (rows leaving early,
    so idle slots sit in the attention window) gives the texts of a fresh backend."""
    requests = [
        dict(prompt=p * (1 + i % 3), max_new_tokens=4 + 5 * i, stop=[], temperature=0.0)
        for i, p in enumerate(PROMPTS * 2)
    ]

    async def batch(backend):
        return [c.text for c in await asyncio.gather(*(backend.complete(**r) for r in requests))]

    run(batch(hf))
    cache = hf._engine.cache
    buffers, capacity = [id(b) for b in cache.keys + cache.values], cache.capacity
    hf.clear_prefix_cache()
    assert capacity > 0 and cache.capacity == capacity and not cache.lens.any()
    assert [id(b) for b in cache.keys + cache.values] == buffers
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():  # the buffers are inference tensors
        for buf in cache.keys + cache.values:
            buf.copy_(torch.randn(buf.shape, generator=gen) * 1e4)
    got = run(batch(hf))
    with HFBackend(tiny_model_dir, max_batch=16) as fresh:
        assert got == run(batch(fresh))


def test_hf_late_request_joins_the_running_batch(hf):
    long_req = dict(prompt=PROMPTS[1], max_new_tokens=60, stop=[], temperature=0.8, seed=1)

    async def scenario():
        alone = await hf.complete(**long_req)
        hf.reset_stats()
        long_task = asyncio.create_task(hf.complete(**long_req))
        while hf.stats().steps < 5:
            await asyncio.sleep(0.001)
        short = await hf.complete(PROMPTS[0], max_new_tokens=3, stop=[], temperature=0.0)
        done_first = not long_task.done()
        return alone, await long_task, short, done_first

    alone, joined, short, short_done_first = run(scenario())
    stats = hf.stats()
    assert short.n_tokens == 3 and short_done_first  # no barrier: the short one did not wait
    assert stats.admissions == 2 and stats.max_active == 2
    # The short prompt was read inside the long row's decoding passes: no pass of its own.
    assert stats.steps == long_req["max_new_tokens"]
    assert joined.text == alone.text  # joining did not disturb the running row


def test_hf_continuation_reads_only_its_new_tokens_in_place(tiny_model_dir, tiny_tokenizer):
    """A row that stopped for a tool call stays parked in its slot; its continuation reuses every
    token the slot holds and its text equals a backend that reads the whole context again."""
    backend = forced_code_end(tiny_model_dir, tiny_tokenizer, after=5)
    prompt = "Compute it. <code>\n"
    backend.prompt_lengths.add(len(tiny_tokenizer.encode(prompt)))
    first = run(backend.complete(prompt, max_new_tokens=30, stop=["</code>"], temperature=0.0))
    assert first.stop == "</code>"
    held = len(tiny_tokenizer.encode(prompt)) + first.n_tokens - 1  # the stop token was never fed
    continued = prompt + first.text + executor_block("7")
    backend.reset_stats()
    second = run(backend.complete(continued, max_new_tokens=8, stop=[], temperature=0.0))
    assert backend.stats().reused_tokens == held
    assert_slot_holds(backend, 0, continued, tiny_model_dir)
    with HFBackend(tiny_model_dir, prefix_cache_tokens=0) as plain:
        assert run(plain.complete(continued, max_new_tokens=8, stop=[], temperature=0.0)).text == second.text
    backend.close()


@pytest.mark.parametrize("parked_slots", [0, 1])
def test_hf_a_parked_row_moved_out_of_its_slot_is_reused(tiny_model_dir, tiny_tokenizer, parked_slots):
    """With one running slot, a new request takes the parked row's slot. The parked keys/values move
    to the parking slot (or, without one, to the prefix cache); the continuation comes back into the
    running slot, reads only its new tokens, and gives the same text. With the parking slot taken,
    the row in the running slot it needs goes to the prefix cache."""
    backend = forced_code_end(tiny_model_dir, tiny_tokenizer, after=4)
    backend.close()
    backend = HFBackend.from_objects(backend.model, tiny_tokenizer, max_batch=1, parked_slots=parked_slots)
    backend.prompt_lengths = set()
    engine = backend._engine
    a = "First problem, with code. <code>\n"
    first = run(backend.complete(a, max_new_tokens=6, stop=[], temperature=0.0))
    other = run(backend.complete("A different question", max_new_tokens=3, stop=[], temperature=0.0))
    assert other.n_tokens == 3
    assert len(engine.prefix.entries) == 1 - parked_slots
    assert sorted(engine.parked) == [0, 1][: 1 + parked_slots]  # `other` in slot 0, `a` in parking
    continued = a + first.text + executor_block("1")
    backend.reset_stats()
    second = run(backend.complete(continued, max_new_tokens=6, stop=[], temperature=0.0))
    assert backend.stats().reused_tokens == len(tiny_tokenizer.encode(a)) + first.n_tokens - 1
    # `other` left slot 0 for the prefix cache: beside `a` there (no parking), or alone (parking taken)
    assert len(engine.prefix.entries) == 2 - parked_slots
    assert engine.cache.lens[1:].sum() == 0  # the parking slot was emptied, not left stale
    assert_slot_holds(backend, 0, continued, tiny_model_dir)
    with HFBackend(tiny_model_dir, prefix_cache_tokens=0) as plain:
        assert run(plain.complete(continued, max_new_tokens=6, stop=[], temperature=0.0)).text == second.text
    backend.close()


def test_hf_more_trajectories_than_slots_give_the_texts_of_a_backend_without_reuse(
    tiny_model_dir, tiny_tokenizer
):
    """Three trajectories over 1 running and 1 parking slot: each first call parks its row, pushing
    the one before into the parking slot and the one before that into the prefix cache; the
    continuations (in place, back from the parking slot, back from the prefix cache) reuse every token
    their row held, leave each slot with its own trajectory's tokens and keys, and give the texts of a
    backend reading each context afresh."""
    prompts = [f"Problem {c}, with code. <code>\n" for c in "ABC"]
    forced = forced_code_end(tiny_model_dir, tiny_tokenizer, after=4)
    forced.close()
    forced.prompt_lengths.update(len(tiny_tokenizer.encode(p)) for p in prompts)

    def trajectories(backend) -> tuple[list[str], list[str], int]:
        """The contexts after the tool call, their continuations' texts, the tokens held for them."""
        firsts = [
            run(backend.complete(p, max_new_tokens=8, stop=["</code>"], temperature=0.0)) for p in prompts
        ]
        assert all(f.stop == "</code>" for f in firsts)
        pairs = list(zip(prompts, firsts, strict=True))
        held = sum(len(tiny_tokenizer.encode(p)) + f.n_tokens - 1 for p, f in pairs)
        contexts = [p + f.text + executor_block(str(i)) for i, (p, f) in enumerate(pairs)]
        backend.reset_stats()
        # C (the last first call) continues in place, B comes back from the parking slot, A from the
        # prefix cache
        outs = [run(backend.complete(t, max_new_tokens=12, stop=[], temperature=0.0)) for t in contexts[::-1]]
        return contexts, [c.text for c in outs[::-1]], held

    options = dict(max_batch=1, stop_on_eos=False)
    with HFBackend.from_objects(forced.model, tiny_tokenizer, parked_slots=1, **options) as reusing:
        contexts, got, held = trajectories(reusing)
        stats = reusing.stats()
        assert stats.from_parking == 1 and stats.reused_tokens == held
        for slot, context in enumerate(contexts[:2]):  # A in the running slot, B parked again
            assert_slot_holds(reusing, slot, context, tiny_model_dir)
    with HFBackend.from_objects(forced.model, tiny_tokenizer, prefix_cache_tokens=0, **options) as afresh:
        assert got == trajectories(afresh)[1]


def test_hf_long_prompts_are_read_in_chunks_with_the_same_result(tiny_model_dir, monkeypatch):
    from dualdistill.backends import hf_engine

    requests = [dict(prompt=p * 3, max_new_tokens=6, stop=[], temperature=0.0) for p in PROMPTS]
    with HFBackend(tiny_model_dir, prefix_cache_tokens=0) as whole:
        expected = run(_solo_and_batched(whole, requests))[0]
    monkeypatch.setattr(hf_engine, "PASS_TOKENS", 7)  # far below every prompt's length
    with HFBackend(tiny_model_dir, prefix_cache_tokens=0) as chunked:
        got = run(_solo_and_batched(chunked, requests))[1]  # all together: chunks of several prompts
        stats = chunked.stats()
    assert [c.text for c in got] == [c.text for c in expected]
    # every pass read at most 7 prompt tokens, so the prompts took several passes before decoding
    assert stats.prefills >= stats.prompt_tokens // 7


def test_hf_same_prompt_sampled_k_times_copies_the_prompt_from_a_running_row(hf):
    """Self-distillation samples one prompt K times: a request that arrives while another with the
    same prompt runs copies the prompt's keys/values from that row's slot."""
    prompt = PROMPTS[1]
    n_prompt = hf.count_tokens(prompt) + 1  # + the tokenizer's BOS, if any, is checked below

    async def scenario():
        first = asyncio.create_task(hf.complete(prompt, max_new_tokens=40, stop=[], temperature=0.8, seed=1))
        while hf.stats().steps < 3:
            await asyncio.sleep(0.001)
        hf.reset_stats()
        second = await hf.complete(prompt, max_new_tokens=5, stop=[], temperature=0.8, seed=2)
        return await first, second

    _, second = run(scenario())
    ids = hf.tokenizer.encode(prompt)
    assert hf.stats().reused_tokens == len(ids) - 1 and n_prompt >= len(ids)
    assert_slot_holds(hf, 1, prompt, hf.model.name_or_path)  # the copied prompt, then its own tokens
    solo = run(hf.complete(prompt, max_new_tokens=5, stop=[], temperature=0.8, seed=2))
    assert solo.text == second.text


def test_hf_a_failing_pass_fails_its_requests_and_the_engine_keeps_serving(tiny_model_dir, tiny_tokenizer):
    """An exception inside a forward pass fails the requests it held (one clear error) and drops
    everything kept, since the cache may be half-written; the next request is served as if fresh."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    real_forward, broken = model.forward, [True]

    @functools.wraps(real_forward)
    def forward(*args, **kwargs):
        if broken[0] and kwargs["input_ids"].shape[1] > 1:  # the pass reading the second prompt
            raise RuntimeError("device lost")
        return real_forward(*args, **kwargs)

    model.forward = forward
    with HFBackend.from_objects(model, tiny_tokenizer) as backend:
        broken[0] = False
        first = run(backend.complete(PROMPTS[1], max_new_tokens=4, stop=[], temperature=0.0))
        broken[0] = True
        with pytest.raises(BackendError, match="generation failed: RuntimeError: device lost"):
            run(
                backend.complete(
                    PROMPTS[1] + first.text + " more", max_new_tokens=4, stop=[], temperature=0.0
                )
            )
        assert not backend._engine.parked and not backend._engine.active
        assert backend._engine.cache.capacity == 0 and not backend._engine.cache.keys  # buffers freed
        broken[0] = False
        again = run(backend.complete(PROMPTS[1], max_new_tokens=4, stop=[], temperature=0.0))
    assert again.text == first.text


def test_hf_rejects_bad_sampling_params(hf):
    with pytest.raises(ValueError, match="top_p"):
        run(hf.complete("x", max_new_tokens=3, stop=[], temperature=0.5, top_p=0.0))


# -- OpenAI-compatible backend ------------------------------------------------------------------
def openai_backend(srv, **kw) -> OpenAIBackend:
    kw.setdefault("backoff_s", 0.01)
    return OpenAIBackend(srv.url, "fake-model", api_key_env="DD_TEST_KEY", **kw)


def test_openai_success_appends_the_stripped_stop_string(monkeypatch):
    monkeypatch.setenv("DD_TEST_KEY", "sk-secret-123")
    outcome = Outcome(text="print(6 * 7)\n", stop_reason="</code>", completion_tokens=9)
    with FakeOpenAIServer([outcome]) as srv:
        c = run(
            openai_backend(srv).complete(
                "p <code>\n", max_new_tokens=64, stop=["</code>"], temperature=0.6, seed=5
            )
        )
    assert c == Completion("print(6 * 7)\n</code>", 9, "stop", "</code>")
    req = srv.requests[0]
    assert req.path == "/v1/completions"
    assert req.headers["authorization"] == "Bearer sk-secret-123"
    body = req.body
    assert (body["prompt"], body["max_tokens"], body["stop"], body["seed"]) == (
        "p <code>\n",
        64,
        ["</code>"],
        5,
    )


def test_openai_end_of_sequence_and_length():
    with FakeOpenAIServer([Outcome(text="done"), Outcome(text="abc", finish_reason="length")]) as srv:
        backend = openai_backend(srv)
        eos = run(backend.complete("p", max_new_tokens=8, stop=["</code>"], temperature=0.0))
        length = run(backend.complete("p", max_new_tokens=8, stop=["</code>"], temperature=0.0))
    assert (eos.text, eos.finish_reason, eos.stop) == ("done", "stop", None)
    assert (length.text, length.finish_reason, length.stop) == ("abc", "length", None)


def test_openai_retries_429_then_succeeds():
    with FakeOpenAIServer([Outcome(status=429), Outcome(status=503), Outcome(text="ok")]) as srv:
        c = run(openai_backend(srv).complete("p", max_new_tokens=4, stop=[], temperature=0.0))
    assert c.text == "ok" and len(srv.requests) == 3


def test_openai_gives_up_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("DD_TEST_KEY", "sk-secret-123")
    with FakeOpenAIServer([Outcome(status=500)] * 3) as srv:
        backend = openai_backend(srv, max_retries=2)
        with pytest.raises(BackendError) as err:
            run(backend.complete("p", max_new_tokens=4, stop=[], temperature=0.0))
    message = str(err.value)
    assert srv.url in message and "3 attempts" in message and "HTTP 500" in message
    assert "sk-secret" not in message and "sk-secret" not in repr(backend)
    assert len(srv.requests) == 3 and srv.remaining == 0


# Both APIs share the request path; each failure case is checked over both.
APIS = ["completions", "chat"]


def _sleeps(monkeypatch) -> list[float]:
    """Record the backoff the backend asks for instead of waiting it (no timing in tests)."""
    import dualdistill.backends.openai_api as module

    asked: list[float] = []

    async def sleep(seconds: float) -> None:
        asked.append(seconds)

    monkeypatch.setattr(module.asyncio, "sleep", sleep)
    return asked


@pytest.mark.parametrize("api", APIS)
def test_a_429s_retry_after_is_waited_at_least(api, monkeypatch):
    asked = _sleeps(monkeypatch)
    script = [Outcome(status=429, retry_after="7"), Outcome(status=429), Outcome(text="ok")]
    with FakeOpenAIServer(script) as srv:
        c = run(openai_backend(srv, api=api).complete("p", max_new_tokens=4, stop=[], temperature=0.0))
    assert c.text == "ok" and len(srv.requests) == 3
    # 7 s as the server said (not jittered below it), then our own 0.02 s backoff with jitter
    assert asked[0] == 7.0 and 0.01 <= asked[1] <= 0.02
    with FakeOpenAIServer([Outcome(status=429, retry_after="3600"), Outcome(text="ok")]) as srv:
        run(
            openai_backend(srv, api=api, max_backoff_s=30).complete(
                "p", max_new_tokens=4, stop=[], temperature=0.0
            )
        )
    assert asked[2] == 30.0, "a Retry-After past max_backoff_s is capped"


@pytest.mark.parametrize("api", APIS)
def test_a_500_and_a_connection_dropped_mid_response_are_retried(api, monkeypatch):
    _sleeps(monkeypatch)
    script = [Outcome(status=500), Outcome(text="lost", drop_after_bytes=30), Outcome(text="ok")]
    with FakeOpenAIServer(script) as srv:
        c = run(openai_backend(srv, api=api).complete("p", max_new_tokens=4, stop=[], temperature=0.0))
    assert c.text == "ok" and len(srv.requests) == 3
    with FakeOpenAIServer([Outcome(text="lost", drop_after_bytes=30)] * 3) as srv:
        backend = openai_backend(srv, api=api, max_retries=2)
        with pytest.raises(BackendError) as err:
            run(backend.complete("p", max_new_tokens=4, stop=[], temperature=0.0))
    assert srv.url in str(err.value) and "3 attempts" in str(err.value)
    assert "APIConnectionError" in str(err.value), "the error says the connection broke"


def test_openai_client_error_is_not_retried():
    srv = FakeOpenAIServer([Outcome(status=400), Outcome(text="never")])
    with srv, pytest.raises(BackendError, match="HTTP 400"):
        run(openai_backend(srv).complete("p", max_new_tokens=4, stop=[], temperature=0.0))
    assert len(srv.requests) == 1


def test_openai_timeout_then_retry():
    with FakeOpenAIServer([Outcome(delay_s=1.5, text="late"), Outcome(text="fast")]) as srv:
        backend = openai_backend(srv, request_timeout=0.3)
        c = run(backend.complete("p", max_new_tokens=4, stop=[], temperature=0.0))
    assert c.text == "fast" and len(srv.requests) == 2


def test_openai_bounds_concurrency():
    with FakeOpenAIServer(lambda body: Outcome(text=body["prompt"], delay_s=0.05)) as srv:
        backend = openai_backend(srv, concurrency=2)
        in_flight = [0, 0]  # now, peak

        async def many():
            client = backend._client()
            real_create = client.completions.create

            async def counting_create(**kw):
                in_flight[0] += 1
                in_flight[1] = max(in_flight)
                try:
                    return await real_create(**kw)
                finally:
                    in_flight[0] -= 1

            client.completions.create = counting_create
            return await asyncio.gather(
                *(backend.complete(f"p{i}", max_new_tokens=2, stop=[], temperature=0.0) for i in range(6))
            )

        results = run(many())
    assert [c.text for c in results] == [f"p{i}" for i in range(6)]
    assert in_flight[1] == 2


def test_openai_model_name_from_the_server_and_make_backend():
    with FakeOpenAIServer([Outcome(text="hi")], model="served-name") as srv:
        backend = make_backend(srv.url, api_key_env="DD_TEST_KEY")
        assert isinstance(backend, OpenAIBackend)
        assert run(backend.complete("p", max_new_tokens=2, stop=[], temperature=0.0)).text == "hi"
    assert backend.model == "served-name"
    assert srv.requests[-1].body["model"] == "served-name"
    assert make_backend("http://127.0.0.1:1/v1#other").model == "other"


def test_a_busy_server_is_parked_and_its_requests_go_to_the_healthy_one_at_once():
    """A 429 with Retry-After parks that server for the wait; the request moves to the other server at
    once instead of sleeping 30 s with it, and the parked server is not asked again while parked."""
    import time

    busy = lambda body: Outcome(status=429, retry_after="30")  # noqa: E731
    with (
        FakeOpenAIServer(busy, model="m") as a,
        FakeOpenAIServer(lambda body: Outcome(text="ok"), model="m") as b,
    ):
        backend = make_backend(f"{a.url}#m,{b.url}#m")

        async def job():
            return [
                await backend.complete("p", max_new_tokens=2, stop=[], temperature=0.0) for _ in range(20)
            ]

        start = time.monotonic()
        answers = run(job())
        took = time.monotonic() - start
    assert [x.text for x in answers] == ["ok"] * 20
    assert took < 10  # the healthy server's pace, not 30 s per request
    assert len([r for r in a.requests if "completions" in r.path]) == 1  # parked after its first 429
    assert backend.served == [0, 20]


def test_when_every_server_is_busy_the_request_waits_for_the_first_to_come_back():
    from dualdistill.backends.servers import ServerSet

    clock = [0.0]

    async def sleep(s):
        clock[0] += s

    class Busy:
        def __init__(self, answers):
            self.answers = answers

        async def complete(self, prompt, **kw):
            from dualdistill.backends import ServerBusy

            answer = self.answers.pop(0)
            if isinstance(answer, float):
                raise ServerBusy("http://x", answer)
            return answer

    servers = ServerSet([Busy([5.0, "late"]), Busy([9.0])], clock=lambda: clock[0], sleep=sleep)
    assert run(servers.complete("p")) == "late" and servers.waited_s == 5.0


def test_openai_server_down_names_the_url():
    with FakeOpenAIServer([]) as srv:
        url = srv.url
    backend = OpenAIBackend(url, "m", max_retries=1, backoff_s=0.01)
    with pytest.raises(BackendError, match=r"127\.0\.0\.1.*2 attempts.*APIConnectionError"):
        run(backend.complete("p", max_new_tokens=2, stop=[], temperature=0.0))


# -- vLLM offline engine ------------------------------------------------------------------------
def test_vllm_backend(tiny_model_dir):
    pytest.importorskip("vllm", reason="vLLM is not installed (optional extra dualdistill[vllm])")
    from dualdistill.backends.vllm_engine import VLLMBackend

    backend = VLLMBackend(tiny_model_dir)
    c = run(backend.complete(PROMPTS[0], max_new_tokens=5, stop=[], temperature=0.0))
    assert c.n_tokens == 5 and c.finish_reason == "length"


def test_openai_error_types_exist():
    # The retry policy names these classes; a client upgrade that renames them must fail loudly here.
    assert issubclass(openai.RateLimitError, openai.APIStatusError)
    assert issubclass(openai.APITimeoutError, openai.APIConnectionError)
