"""What the caller's own work costs HFBackend's engine: plain generation with and without a busy caller.

    python bench/caller_load.py                      # CPU, tiny random Qwen2, 64 rows
    python bench/caller_load.py --work-us 200 --period-ms 3

A tool loop does work of its own on the caller's thread while the engine generates: tokenizing each
continuation, the event loop, the sandbox's bookkeeping. On a machine whose cores the engine's OpenMP
threads already fill (2 cores here), that work does not run beside the engine for free. This bench
measures the exchange rate: ``plain`` generation (64 trajectories, one ``complete`` each) alone, and
``loaded``, the same with one more task on the caller's event loop that runs ``--work-us`` of Python
every ``--period-ms``, interleaved for ``--repeats`` rounds. It reports the median wall times, the
caller's CPU time in each (``time.thread_time`` of the event loop's thread), and ``amplification``:
the wall time the load added over the CPU time it used (1.0: the load only took its own time; more:
each bit of it also stalled the engine). It also times the bench's tool run (``generation.py``'s
defaults) for its caller CPU time, so the two can be compared: the tool loop's own caller work times
the amplification is about what that work costs the tool run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from dualdistill.backends.hf import HFBackend
from generation import build_model, make_prompts, plain, plan_segments, timed, tool_integrated


async def busy(stop: asyncio.Event, work_s: float, period_s: float) -> None:
    """Python work of ``work_s`` seconds (holding the GIL), then a sleep of ``period_s``, until stopped."""
    while not stop.is_set():
        end = time.perf_counter() + work_s
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(period_s)


async def with_caller(job, load: tuple[float, float] | None) -> tuple[object, float]:
    """``job``'s result and the CPU time of this (the event loop's) thread while it ran."""
    cpu0 = time.thread_time()
    stop = asyncio.Event()
    task = asyncio.create_task(busy(stop, *load)) if load else None
    out = await job
    stop.set()
    if task:
        await task
    return out, time.thread_time() - cpu0


def measure(backend: HFBackend, args) -> dict[str, list[tuple[float, float]]]:
    prompts = make_prompts(backend.tokenizer, args.batch, args.prompt_tokens)
    plans = plan_segments(args.batch, args.new_tokens, 64, seed=0)
    load = (args.work_us * 1e-6, args.period_ms * 1e-3)
    jobs = {
        "plain": lambda: with_caller(plain(backend, prompts, args.new_tokens), None),
        "loaded": lambda: with_caller(plain(backend, prompts, args.new_tokens), load),
        "tool": lambda: with_caller(tool_integrated(backend, prompts, args.new_tokens, plans, 0.05), None),
    }
    timed(backend, plain(backend, prompts[:4], 8))  # warm-up
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in jobs}
    for r in range(args.repeats):
        order = list(jobs)[r % 3 :] + list(jobs)[: r % 3]  # rotate, so no job always runs first
        for name in order:
            (_, cpu), seconds, _ = timed(backend, jobs[name]())
            out[name].append((seconds, cpu))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--work-us", type=float, default=400, help="Python work per wake-up of the load")
    ap.add_argument("--period-ms", type=float, default=6, help="sleep between the load's wake-ups")
    ap.add_argument("--repeats", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        backend = HFBackend(
            build_model(args.size, Path(tmp) / "model"), max_batch=args.batch, stop_on_eos=False
        )
        out: list[dict] = []
        # on a thread of its own, as in generation.py (see off_main_thread there)
        thread = threading.Thread(target=lambda: out.append(measure(backend, args)))
        thread.start()
        thread.join()
        backend.close()
    runs = out[0]
    med = lambda name, i: statistics.median(x[i] for x in runs[name])  # noqa: E731
    extra = [lo[0] - pl[0] for lo, pl in zip(runs["loaded"], runs["plain"], strict=True)]
    load_cpu = [lo[1] - pl[1] for lo, pl in zip(runs["loaded"], runs["plain"], strict=True)]
    print(json.dumps({
        "size": args.size, "batch": args.batch, "work_us": args.work_us, "period_ms": args.period_ms,
        "repeats": args.repeats,
        "plain_s": round(med("plain", 0), 3), "loaded_s": round(med("loaded", 0), 3),
        "plain_caller_cpu_s": round(med("plain", 1), 3), "loaded_caller_cpu_s": round(med("loaded", 1), 3),
        # per repeat: the wall time the load added over the caller CPU it added; the median of those
        "amplification": round(statistics.median(e / c for e, c in zip(extra, load_cpu, strict=True)), 2),
        "tool_s": round(med("tool", 0), 3), "tool_caller_cpu_s": round(med("tool", 1), 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
