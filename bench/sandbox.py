"""Sandbox speed against the reference executor, measured in one run.

The reference (the released DualDistill code) starts a fresh ``python`` process per block and re-runs
all earlier successful blocks to fake state. We compare, on this machine and in this run:
  - latency of a trivial block (p50/p99), session start time, throughput of 16 concurrent sessions;
  - total time of a 10-block math-agent trajectory (block 1 imports sympy and numpy; later blocks define
    functions, call them and print), our session start included; and of 10 trivial blocks.

Usage: python bench/sandbox.py [--repeats 3]
Prints one JSON line with the figures and ``speedup_vs_reexec``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dualdistill.sandbox import SandboxConfig, SandboxPool, Session

TRAJECTORY = [
    "import sympy as sp\nimport numpy as np\nx = sp.symbols('x')",
    "def f(n):\n    return n * (n + 1) // 2\nprint(f(100))",
    "roots = sp.solve(x**2 - 5*x + 6, x)\nprint(roots)",
    "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))\n"
    "print(sum(1 for k in range(1000) if is_prime(k)))",
    "a = np.arange(1, 101)\nprint(int(a.sum()), float(a.mean()))",
    "from math import comb\nprint(comb(20, 10))",
    "expr = sp.expand((x + 1)**5)\nprint(expr)",
    "vals = [f(k) for k in range(10)]\nprint(vals)",
    "M = np.array([[2, 1], [1, 3]])\nprint(np.linalg.det(M).round(6))",
    "print(sp.integrate(x**2, (x, 0, 3)))",
]
TRIVIAL = ["pass"] * 10


def reference_trajectory(blocks: list[str], timeout: float = 30.0) -> float:
    """The reference approach: one fresh process per block, re-running earlier successful blocks."""
    start = time.perf_counter()
    ok: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, code in enumerate(blocks):
            path = Path(tmp) / f"block{i}.py"
            path.write_text("\n".join([*ok, code]))
            proc = subprocess.run([sys.executable, str(path)], capture_output=True, timeout=timeout, cwd=tmp)
            if proc.returncode == 0:
                ok.append(code)
    return time.perf_counter() - start


def ours_trajectory(blocks: list[str], config: SandboxConfig) -> float:
    start = time.perf_counter()
    with Session(config) as s:
        for code in blocks:
            r = s.run(code)
            assert r.status == "ok", r.output
    return time.perf_counter() - start


def trivial_latency(config: SandboxConfig, n: int) -> list[float]:
    with Session(config) as s:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            s.run("x = 1")
            times.append(time.perf_counter() - t)
    return times


def session_starts(config: SandboxConfig, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        s = Session(config)
        s.run("pass")  # ready means it ran a block, numpy and sympy already imported
        times.append(time.perf_counter() - t)
        s.close()
    return times


def throughput(config: SandboxConfig, sessions: int, blocks: int) -> float:
    """Blocks per second with ``sessions`` concurrent sessions, each running ``blocks`` small blocks."""

    async def main() -> float:
        async with SandboxPool(config, max_concurrency=sessions) as pool:

            async def one(i: int) -> None:
                async with pool.session() as s:
                    for j in range(blocks):
                        await s.run(f"v = {i} * {j}\nprint(sum(range(1000)) + v)")

            t = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(sessions)))
            return sessions * blocks / (time.perf_counter() - t)

    return asyncio.run(main())


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--isolation", default="auto")
    parser.add_argument(
        "--limit", default="wall", choices=("wall", "cpu"), help="what the block limit counts"
    )
    args = parser.parse_args()
    config = SandboxConfig(timeout_s=30.0, isolation=args.isolation, limit=args.limit)

    t = time.perf_counter()
    Session(config).close()  # the template is started once per process; reported separately
    template_start = time.perf_counter() - t

    latency = trivial_latency(config, 300)
    starts = session_starts(config, 30)
    ours_traj = min(ours_trajectory(TRAJECTORY, config) for _ in range(args.repeats))
    ref_traj = min(reference_trajectory(TRAJECTORY) for _ in range(args.repeats))
    ours_triv = min(ours_trajectory(TRIVIAL, config) for _ in range(args.repeats))
    ref_triv = min(reference_trajectory(TRIVIAL) for _ in range(args.repeats))
    tput = throughput(config, sessions=16, blocks=20)

    result = {
        "bench": "sandbox",
        "limit": args.limit,
        "template_start_s": round(template_start, 3),
        "trivial_block_p50_ms": round(1000 * statistics.median(latency), 3),
        "trivial_block_p99_ms": round(1000 * pct(latency, 0.99), 3),
        "session_start_p50_ms": round(1000 * statistics.median(starts), 2),
        "session_start_p99_ms": round(1000 * pct(starts, 0.99), 2),
        "throughput_16_sessions_blocks_per_s": round(tput, 1),
        "trajectory_10_blocks_ours_s": round(ours_traj, 3),
        "trajectory_10_blocks_reexec_s": round(ref_traj, 3),
        "speedup_vs_reexec": round(ref_traj / ours_traj, 1),
        "trivial_10_blocks_ours_s": round(ours_triv, 4),
        "trivial_10_blocks_reexec_s": round(ref_triv, 3),
        "speedup_vs_reexec_trivial": round(ref_triv / ours_triv, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
