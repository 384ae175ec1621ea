"""Rate limits of hosted teachers, enforced before sending: requests and tokens per minute.

The limiter's clock and sleep are injected (a fake clock that a sleep advances), so the tests check the
waits without sleeping; the requests go through a real HTTP server on 127.0.0.1 that records when each
arrived, on the same clock.
"""

from __future__ import annotations

import asyncio

from dualdistill.backends.openai_api import OpenAIBackend
from dualdistill.backends.ratelimit import RateLimitedBackend, RateLimiter
from dualdistill.core.config import load_config
from dualdistill.teachers.build import spec_backend as _backend
from dualdistill.teachers.teach import TeachConfig
from fake_openai_server import FakeOpenAIServer, Outcome


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_thirty_requests_at_sixty_per_minute_take_at_least_29_seconds():
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=60, clock=clock, sleep=clock.sleep)
    arrivals: list[float] = []

    def answer(body):
        arrivals.append(clock.now)  # when the request reached the server, on the limiter's clock
        return Outcome(text="ok")

    async def go():
        with FakeOpenAIServer(answer) as srv:
            backend = RateLimitedBackend(OpenAIBackend(srv.url, "fake-model"), limiter)
            for _ in range(30):  # one after another, as fast as the client can
                await backend.complete("p", max_new_tokens=4, stop=[], temperature=0.0)

    asyncio.run(go())
    assert len(arrivals) == 30
    assert arrivals[-1] - arrivals[0] >= 29.0
    gaps = [b - a for a, b in zip(sorted(arrivals), sorted(arrivals)[1:], strict=False)]
    assert min(gaps) >= 1.0 - 1e-9  # one a second, no burst
    assert abs(limiter.waiting_s - 29.0) < 1e-6 and len(limiter.waits) == 29  # 1 s before each but the first


def test_a_burst_is_admitted_one_request_a_second_in_arrival_order():
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=60, clock=clock, sleep=clock.sleep)

    async def go():
        return await asyncio.gather(*(limiter.acquire() for _ in range(30)))

    starts = [b[0] for b in asyncio.run(go())]
    assert starts == [1000.0 + i for i in range(30)]


def test_the_token_rate_books_reservations_and_settles_on_what_was_used():
    clock = FakeClock()
    limiter = RateLimiter(tokens_per_minute=600, clock=clock, sleep=clock.sleep)  # 10 tokens a second

    async def go():
        a = await limiter.acquire(100)  # books 10 s of the token rate
        limiter.settle(a, 20)  # the answer used 20 tokens: 8 s given back
        await limiter.acquire(100)  # starts after 2 s, books 10 s more
        await limiter.acquire(50)
        return clock.now

    end = asyncio.run(go())
    assert abs(limiter.waiting_s - 12.0) < 1e-6 and end == 1000.0 + 12.0
    assert limiter.waits == [2.0, 10.0]


def test_no_limit_never_waits():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)

    async def go():
        for _ in range(100):
            await limiter.acquire(10**6)

    asyncio.run(go())
    assert limiter.waiting_s == 0 and not limiter.active


def test_teacher_specs_set_the_limits():
    cfg = load_config(TeachConfig, overrides=[
        "text_teacher.kind=openai", "text_teacher.backend.model=http://127.0.0.1:9/v1", "text_teacher.backend.served_model_name=m",
        "text_teacher.max_requests_per_minute=30", "text_teacher.max_tokens_per_minute=20000",
    ])  # fmt: skip
    backend = _backend(cfg.text_teacher)
    assert isinstance(backend, RateLimitedBackend)
    assert (backend.limiter.rpm, backend.limiter.tpm) == (30, 20000)
    plain = load_config(
        TeachConfig,
        overrides=["text_teacher.kind=openai", "text_teacher.backend.model=http://127.0.0.1:9/v1"],
    )
    assert not isinstance(_backend(plain.text_teacher), RateLimitedBackend)


def test_a_waiting_request_starts_as_soon_as_the_one_in_flight_gives_its_tokens_back():
    """At 600 tokens a minute, a 500-token reservation blocks the next request for 50 s; when the first
    request settles at 50 tokens used, the waiter wakes at once instead of sleeping the whole reservation."""
    limiter = RateLimiter(tokens_per_minute=600)

    async def go():
        first = await limiter.acquire(500)
        waiter = asyncio.ensure_future(limiter.acquire(100))
        await asyncio.sleep(0.05)
        assert not waiter.done()  # it waits for tokens
        limiter.settle(first, 50)  # 450 tokens back: 45 s of the token rate
        await asyncio.wait_for(waiter, timeout=10)  # woken now, not after 50 s

    asyncio.run(go())
    assert limiter.waiting_s < 10


def test_a_request_bigger_than_the_token_rate_is_refused_naming_both_numbers():
    import pytest

    from dualdistill.core.config import ConfigError

    limiter = RateLimiter(tokens_per_minute=100)
    with pytest.raises(ValueError, match=r"reserves 500 tokens, more than max_tokens_per_minute 100"):
        asyncio.run(limiter.acquire(500))
    spec = load_config(TeachConfig, None, ["code_teacher.kind=openai", "code_teacher.backend.model=http://127.0.0.1:9/v1",
                                            "code_teacher.backend.served_model_name=m", "code_teacher.max_tokens_per_minute=1000",
                                            "code_teacher.generation.budget=4096"]).code_teacher  # fmt: skip
    with pytest.raises(ConfigError, match=r"max_tokens_per_minute 1000 is below .*budget 4096"):
        _backend(spec)
