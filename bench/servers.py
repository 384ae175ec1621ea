"""A busy server beside a healthy one: the same job on the healthy server alone, and on both, in one run.

    python bench/servers.py                     # 200 requests, 16 in flight, 50 ms per answer

The busy server answers every request with 429 and ``Retry-After: 2`` (a replica that is overloaded for
the whole job). The healthy one answers after ``--latency`` seconds. Both are the project's fixture
server (tests/fake_openai_server.py) speaking the OpenAI JSON shapes on 127.0.0.1, opened through
``open_backend`` exactly as ``--model URL1,URL2`` opens them. Each job runs ``--repeats`` times,
interleaved; the last line is one JSON object with the median seconds and ``both_vs_healthy`` (the
issue-34 target: at most 1.2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from dualdistill.backends import BackendConfig, open_backend
from fake_openai_server import FakeOpenAIServer, Outcome


async def job(model: str, n: int, in_flight: int) -> float:
    backend = open_backend(BackendConfig(model=model), "paper")
    limit = asyncio.Semaphore(in_flight)

    async def one() -> str:
        async with limit:
            c = await backend.complete("p", max_new_tokens=2, stop=[], temperature=0.0)
            return c.text

    t0 = time.perf_counter()
    try:
        texts = await asyncio.gather(*(one() for _ in range(n)))
    finally:
        seconds = time.perf_counter() - t0
        backend.close()
    assert texts == ["ok"] * n, "every request answered by the healthy server"
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--in-flight", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds the healthy server takes per answer")
    ap.add_argument("--retry-after", default="2")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    healthy = lambda body: Outcome(text="ok", delay_s=args.latency)  # noqa: E731
    busy = lambda body: Outcome(status=429, retry_after=args.retry_after)  # noqa: E731
    alone, both = [], []
    with FakeOpenAIServer(busy, model="m") as b, FakeOpenAIServer(healthy, model="m") as h:
        for r in range(args.repeats):
            for name in ("alone", "both") if r % 2 == 0 else ("both", "alone"):
                model = f"{h.url}#m" if name == "alone" else f"{b.url}#m,{h.url}#m"
                seconds = asyncio.run(job(model, args.requests, args.in_flight))
                (alone if name == "alone" else both).append(seconds)
        busy_asked = len([q for q in b.requests if "completions" in q.path])
    result = {
        "requests": args.requests,
        "in_flight": args.in_flight,
        "latency_s": args.latency,
        "retry_after_s": float(args.retry_after),
        "repeats": args.repeats,
        "healthy_alone_s": round(statistics.median(alone), 3),
        "busy_and_healthy_s": round(statistics.median(both), 3),
        "both_vs_healthy": round(statistics.median(b_ / a_ for a_, b_ in zip(alone, both, strict=True)), 3),
        "busy_server_asked": busy_asked,
        "runs": {"alone": [round(x, 3) for x in alone], "both": [round(x, 3) for x in both]},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
