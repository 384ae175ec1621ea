"""What one forward pass of HFBackend's engine costs, by the shape of the pass, on one model in one run.

    python bench/pass_cost.py                  # CPU, tiny random Qwen2, 64 slots
    python bench/pass_cost.py --rounds 60      # more rounds when the host is noisy

The generation bench's ``tool / plain`` ratio is the workload's share (more passes: rows wait for their
tools) over the engine's (each tool pass costs more). This bench isolates the second: it plans and runs
fixed passes through the engine's ``SlotCache`` and packed attention (no asyncio, no tool waits, no
other thread), each shape timed over ``--passes`` passes, the shapes interleaved for ``--rounds``
rounds, and reports the median milliseconds per pass and each shape over ``plain`` (the pass of the
plain run: every slot decoding at one length, so attention needs no mask). The other shapes are what a
tool run's passes look like: rows at different lengths (a mask, keys as long as the longest row), fewer
decoding rows (dense in slots ``0..n-1``, or spread over the window with idle slots between them, as
rows waiting for a tool leave them), and continuations (a row reading an executor block of ``--read``
tokens beside the decoding rows). Slot contents are random; only shapes matter here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from dualdistill.backends.hf import HFBackend
from dualdistill.backends.slot_cache import packed


def shapes(batch: int, length: int, spread: int, read: int, seed: int = 0) -> dict[str, tuple]:
    """Name -> (feeds, slot lengths before the pass). A decoding row feeds one token."""
    rng = np.random.default_rng(seed)
    equal = np.full(batch, length)
    varied = rng.integers(length, length + spread + 1, batch)
    n = batch * 27 // 32  # the tool run's mean batch at the bench defaults (54 of 64)
    spread_out = [s for s in range(batch) if s % 6 != 5][:n]  # idle slots between the decoding ones
    dense = list(range(n))
    decode = lambda slots: [(s, [5]) for s in slots]  # noqa: E731
    reading = lambda slot: (slot, [7] * read)  # noqa: E731  a continuation reading an executor block
    return {
        "plain": (decode(range(batch)), equal),
        "varied_lengths": (decode(range(batch)), varied),
        f"{n}_rows_dense": (decode(dense), varied),
        f"{n}_rows_spread": (decode(spread_out), varied),
        f"{n}_rows_dense_1_read": ([*decode(dense), reading(batch - 1)], varied),
        f"{n}_rows_dense_2_read": (
            [*decode(dense), reading(batch - 1), reading(batch - 2)],
            varied,
        ),
    }


def measure(backend: HFBackend, cases: dict[str, tuple], rounds: int, passes: int) -> dict[str, float]:
    engine = backend._engine
    cache, model = engine.cache, engine.model

    def one_pass(feeds, lens):
        cache.lens[:] = 0
        cache.lens[: len(lens)] = lens
        plan = cache.plan(feeds)
        with torch.inference_mode(), packed(model):
            model(input_ids=plan.ids, attention_mask=dict.fromkeys(engine.mask_keys, plan),
                  position_ids=plan.position_ids, use_cache=True, logits_to_keep=plan.last,
                  **{engine.cache_kw: cache})  # fmt: skip

    for feeds, lens in cases.values():  # allocate the buffers and warm up every shape
        one_pass(feeds, lens)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (feeds, lens) in cases.items():
            t0 = time.perf_counter()
            for _ in range(passes):
                one_pass(feeds, lens)
            times[name].append((time.perf_counter() - t0) / passes * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    from generation import build_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--length", type=int, default=257, help="positions every slot holds in the plain pass")
    ap.add_argument("--spread", type=int, default=72, help="the varied lengths run up to length + spread")
    ap.add_argument("--read", type=int, default=13, help="tokens a continuation reads (executor block)")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--passes", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        backend = HFBackend(
            build_model(args.size, Path(tmp) / "model"), max_batch=args.batch, stop_on_eos=False
        )
        backend._engine.cache.reserve(args.length + args.spread + args.read + 1)
        cases = shapes(args.batch, args.length, args.spread, args.read)
        out: list[dict] = []
        # on a thread of its own, as the engine runs (see generation.off_main_thread)
        thread = threading.Thread(
            target=lambda: out.append(measure(backend, cases, args.rounds, args.passes))
        )
        thread.start()
        thread.join()
        backend.close()
    ms = out[0]
    print(json.dumps({
        "size": args.size, "batch": args.batch, "length": args.length, "spread": args.spread,
        "read": args.read, "rounds": args.rounds, "passes": args.passes,
        "ms_per_pass": {k: round(v, 3) for k, v in ms.items()},
        "vs_plain": {k: round(v / ms["plain"], 3) for k, v in ms.items()},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
