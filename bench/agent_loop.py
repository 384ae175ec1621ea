"""Continuous batching in the agent loop vs a per-round barrier (ToRA / Qwen2.5-Math style), same work.

Both drivers run the same trajectories with the real sandbox: each trajectory writes a random number
of code blocks (1-6); a block sleeps for a random time (most are quick, one in ten takes 0.5 s, like
a slow or timed-out block). The backend is simulated as an ideal batching server: every request takes
``--gen-s`` seconds however many are in flight, so the figure isolates the scheduling of the loop.

- continuous: ``agent.driver.run_many`` (each trajectory goes on as soon as its own block finished);
- barrier: every round waits for all generations, then for all code blocks, then starts the next.

Prints one JSON line with both wall times and the speed-up. Run:

    python bench/agent_loop.py --trajectories 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dualdistill.agent.driver import run_many
from dualdistill.agent.loop import AgentConfig, make_pool
from dualdistill.format.problems import Problem
from dualdistill.format.prompts import build_prompt
from dualdistill.format.trajectory import executor_block


@dataclass
class Done:
    text: str
    n_tokens: int
    finish_reason: str
    stop: str | None


class IdealBatchingBackend:
    """Every request takes ``gen_s``; the script of problem ``i`` is ``plans[i]`` (block sleep times)."""

    def __init__(self, plans: list[list[float]], gen_s: float):
        self.plans, self.gen_s = plans, gen_s

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def complete(self, prompt, *, max_new_tokens, stop, temperature, top_p=1.0, seed=None):
        await asyncio.sleep(self.gen_s)
        i = int(re.search(r"Task (\d+)", prompt).group(1))
        done = prompt.count("<executor>\n")
        if done < len(self.plans[i]):
            text = f"<code>\nimport time\ntime.sleep({self.plans[i][done]})\nprint({done})\n</code>"
            return Done(text, self.count_tokens(text), "stop", "</code>")
        text = f"<answer>\\boxed{{{i}}}</answer>"
        return Done(text, self.count_tokens(text), "stop", "</answer>")


async def barrier(problems, backend, pool, config) -> None:
    """The per-round baseline: generate for all active trajectories, then run all their blocks."""
    prompts = {p.id: build_prompt(p.question, template=config.template) for p in problems}
    responses = dict.fromkeys(prompts, "")
    sessions = {p.id: await pool.open() for p in problems}
    active = list(prompts)
    while active:
        outs = await asyncio.gather(
            *(backend.complete(prompts[k] + responses[k], max_new_tokens=config.budget,
                               stop=["</code>", "</answer>"], temperature=0.6) for k in active)
        )  # fmt: skip
        for k, c in zip(active, outs, strict=True):
            responses[k] += c.text
        coding = [k for k, c in zip(active, outs, strict=True) if c.stop == "</code>"]
        results = await asyncio.gather(*(sessions[k].run(_last_code(responses[k])) for k in coding))
        for k, r in zip(coding, results, strict=True):
            responses[k] += executor_block(r.output)
        active = coding
    for s in sessions.values():
        await s.close()


def _last_code(text: str) -> str:
    return text[text.rfind("<code>") + len("<code>") : -len("</code>")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trajectories", type=int, default=64)
    ap.add_argument("--gen-s", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    plans = [
        [0.5 if rng.random() < 0.1 else 0.01 for _ in range(rng.randint(1, 6))]
        for _ in range(args.trajectories)
    ]
    problems = [Problem(f"t{i}", f"Task {i}", str(i), source="bench") for i in range(args.trajectories)]
    config = AgentConfig(sandbox_concurrency=args.trajectories, concurrency=args.trajectories)
    backend = IdealBatchingBackend(plans, args.gen_s)
    pool = make_pool(config)

    async def continuous(out: Path) -> None:
        await run_many(problems, backend, pool, config, samples=1, out_path=out, progress=False)

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(continuous(Path(tmp) / "warm.jsonl"))  # warm the sandbox template and grader
        t0 = time.perf_counter()
        asyncio.run(continuous(Path(tmp) / "records.jsonl"))
        t_cont = time.perf_counter() - t0
    t0 = time.perf_counter()
    asyncio.run(barrier(problems, backend, pool, config))
    t_barrier = time.perf_counter() - t0
    asyncio.run(pool.close())
    blocks = sum(len(p) for p in plans)
    # Lower bounds with zero overhead: the slowest trajectory alone, and the sum of per-round maxima.
    ideal_cont = max(args.gen_s * (len(p) + 1) + sum(p) for p in plans)
    rounds = max(len(p) for p in plans)
    ideal_barrier = args.gen_s * (rounds + 1) + sum(
        max((p[r] for p in plans if len(p) > r), default=0) for r in range(rounds)
    )
    print(json.dumps({
        "bench": "agent_loop", "trajectories": args.trajectories, "code_blocks": blocks, "gen_s": args.gen_s,
        "continuous_s": round(t_cont, 3), "barrier_s": round(t_barrier, 3),
        "speedup": round(t_barrier / t_cont, 2),
        "ideal_continuous_s": round(ideal_cont, 3), "ideal_barrier_s": round(ideal_barrier, 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
