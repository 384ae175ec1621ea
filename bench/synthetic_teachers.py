"""Agentic teacher throughput on text-favoured problems: sandbox concurrency against one at a time.

    python bench/synthetic_teachers.py                  # 8 huge-exponent problems, 1 s timeout
    python bench/synthetic_teachers.py --problems 16 --timeout 3

Each text-favoured problem costs the agentic teacher two real sandbox timeouts (the naive programs never
finish). The sandbox timeout is wall clock, so running them concurrently overlaps the waits. Prints one
JSON line: wall seconds for ``--concurrency 1`` (the baseline) and for ``--concurrency``, the number of
timeouts, and ``speedup`` (baseline / concurrent) measured in the same run. Also the text teacher's
trajectories per second on the whole world (pure Python, no sandbox).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from dualdistill.sandbox import SandboxConfig, SandboxPool
from dualdistill.synthetic.families import generate
from dualdistill.synthetic.teachers import (
    ProgrammaticAgenticConfig,
    ProgrammaticAgenticTeacher,
    ProgrammaticTextTeacher,
)


def run_agentic(problems, timeout: float, concurrency: int) -> tuple[float, int]:
    async def main() -> tuple[float, int]:
        cfg = ProgrammaticAgenticConfig(timeout_s=timeout, max_concurrency=concurrency)
        async with SandboxPool(SandboxConfig(timeout_s=timeout), max_concurrency=concurrency) as pool:
            await pool.run_once("print(1)")  # start the template outside the timed region
            teacher = ProgrammaticAgenticTeacher(cfg, pool=pool)
            start = time.perf_counter()
            await asyncio.gather(*(teacher.solve(p) for p in problems))
            wall = time.perf_counter() - start
        return wall, sum(c["status"] == "timeout" for c in teacher.tool_calls)

    return asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()

    text_problems = [p for p in generate(20 * args.problems, seed=0) if p.metadata["group"] == "text"]
    problems = text_problems[: args.problems]
    serial, timeouts = run_agentic(problems, args.timeout, 1)
    concurrent, _ = run_agentic(problems, args.timeout, args.concurrency)

    world = generate(2000, seed=0)
    teacher = ProgrammaticTextTeacher()
    start = time.perf_counter()
    for p in world:
        teacher.solve_sync(p)
    text_rate = len(world) / (time.perf_counter() - start)
    print(json.dumps({
        "problems": len(problems), "timeout_s": args.timeout, "timeouts": timeouts,
        "serial_s": round(serial, 2), "concurrency": args.concurrency, "concurrent_s": round(concurrent, 2),
        "speedup": round(serial / concurrent, 2), "text_teacher_per_s": round(text_rate, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
