"""Tool-integrated vs plain generation throughput of HFBackend, same model and batch, in one run.

    python bench/generation.py                                    # CPU, tiny random Qwen2
    python bench/generation.py --device cuda --size 15m --batch 64 # GPU, ~15M-parameter Qwen2 in bf16

Four measurements, each ``--batch`` trajectories of ``--prompt-tokens`` prompt tokens and
``--new-tokens`` generated tokens (end-of-sequence is ignored so every run generates the same count):

- ``generate``: transformers ``model.generate`` on the whole batch (the reference point);
- ``plain``: HFBackend, every trajectory one ``complete`` call;
- ``tool``: HFBackend, every trajectory writes segments of about ``--segment`` tokens, each followed
  by a simulated tool call (``--tool-latency`` seconds, jittered) and an injected executor block,
  with no barrier between trajectories (what the agent loop does);
- ``barrier``: the same trajectories, but every round waits for the whole batch (ToRA-style).

Throughput counts generated tokens only (not prompt or executor tokens) over wall time. The last
line printed is one JSON object with the figures and the ratios ``tool / plain``, ``barrier / plain``
and ``plain / generate``. The random model never writes ``</code>`` by itself, so segment ends stand
in for code blocks; a continuation reuses the KV of its earlier segments through the backend's prefix
cache, so only the injected executor tokens are computed again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from dualdistill.backends.hf import HFBackend
from dualdistill.format.trajectory import executor_block

# hidden, layers, heads, kv heads, mlp: about 15M parameters with the 512-token tokenizer
SIZE_15M = dict(
    hidden_size=384, num_hidden_layers=8, num_attention_heads=6, num_key_value_heads=2, intermediate_size=1280
)


def build_model(size: str, out: Path) -> Path:
    from dualdistill.synthetic.student import SIZES, build_student

    if size in SIZES:
        return build_student(out, size=size, seed=0)
    if size != "15m":
        raise SystemExit(f"--size must be one of {', '.join([*SIZES, '15m'])}")
    from dualdistill.synthetic import student

    SIZES_WITH_15M = {**SIZES, "15m": SIZE_15M}
    student.SIZES = SIZES_WITH_15M  # the builder reads its size table; extend it for this run only
    try:
        return build_student(out, size="15m", seed=0)
    finally:
        student.SIZES = SIZES


def make_prompts(tokenizer, batch: int, n_tokens: int) -> list[str]:
    from dualdistill.synthetic.student import default_corpus

    text = " ".join(default_corpus() * 50)
    ids = tokenizer.encode(text, add_special_tokens=False)
    prompts = []
    for i in range(batch):  # different offsets, so rows differ
        start = (i * 37) % (len(ids) - n_tokens)
        prompts.append(tokenizer.decode(ids[start : start + n_tokens]))
    return prompts


def bench_generate(backend: HFBackend, prompts: list[str], new_tokens: int, cache: str | None) -> float:
    tok, model = backend.tokenizer, backend.model
    batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    kw = dict(
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
    )
    if cache:
        kw["cache_implementation"] = cache
    _sync()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**batch, **kw)
    _sync()
    generated = (out.shape[1] - batch["input_ids"].shape[1]) * len(prompts)
    return generated / (time.perf_counter() - t0)


async def plain(backend: HFBackend, prompts: list[str], new_tokens: int) -> int:
    done = await asyncio.gather(
        *(backend.complete(p, max_new_tokens=new_tokens, stop=[], temperature=0.0) for p in prompts)
    )
    return sum(c.n_tokens for c in done)


async def trajectory(backend, prompt, new_tokens, segments, latency, rng) -> tuple[int, int]:
    response, generated, calls = "", 0, 0
    for seg in segments:
        c = await backend.complete(
            prompt + response,
            max_new_tokens=min(seg, new_tokens - generated),
            stop=["</code>"],
            temperature=0.0,
        )
        generated += c.n_tokens
        response += c.text
        if generated >= new_tokens:
            break
        await asyncio.sleep(latency * rng.uniform(0.5, 1.5))  # the sandbox running the block
        calls += 1
        response += executor_block(str(rng.randint(0, 10**6)))
    return generated, calls


def plan_segments(n: int, new_tokens: int, segment: int, seed: int) -> list[list[int]]:
    """Per trajectory, segment lengths around ``segment`` that add up to at least ``new_tokens``."""
    rng = random.Random(seed)
    plans = []
    for _ in range(n):
        segs, total = [], 0
        while total < new_tokens:
            segs.append(rng.randint(max(1, segment // 2), segment * 3 // 2))
            total += segs[-1]
        plans.append(segs)
    return plans


async def tool_integrated(backend, prompts, new_tokens, plans, latency) -> tuple[int, float]:
    rng = random.Random(0)
    results = await asyncio.gather(
        *(
            trajectory(backend, p, new_tokens, segs, latency, rng)
            for p, segs in zip(prompts, plans, strict=True)
        )
    )
    return sum(g for g, _ in results), sum(t for _, t in results)


async def with_barrier(backend, prompts, new_tokens, plans, latency) -> int:
    """Every round: all trajectories generate, then all run their tools; nobody starts early."""
    rng = random.Random(0)
    responses, generated = [""] * len(prompts), [0] * len(prompts)
    for r in range(max(len(s) for s in plans)):
        live = [i for i in range(len(prompts)) if generated[i] < new_tokens and r < len(plans[i])]
        if not live:
            break
        outs = await asyncio.gather(
            *(
                backend.complete(
                    prompts[i] + responses[i],
                    max_new_tokens=min(plans[i][r], new_tokens - generated[i]),
                    stop=["</code>"],
                    temperature=0.0,
                )
                for i in live
            )
        )
        for i, c in zip(live, outs, strict=True):
            generated[i] += c.n_tokens
            responses[i] += c.text + executor_block(str(rng.randint(0, 10**6)))
        await asyncio.gather(*(asyncio.sleep(latency * rng.uniform(0.5, 1.5)) for _ in live))
    return sum(generated)


def timed(backend: HFBackend, coro) -> tuple[object, float, dict]:
    backend.reset_stats()
    backend.clear_prefix_cache()  # each measurement starts cold; no reuse across them
    _sync()
    t0 = time.perf_counter()
    result = asyncio.run(coro)
    _sync()
    return result, time.perf_counter() - t0, backend.stats().as_dict()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (default: build a random one of --size)")
    ap.add_argument("--size", default="tiny", help="tiny | small | base | 15m (when no --model)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--segment", type=int, default=64, help="mean tokens between tool calls")
    ap.add_argument("--tool-latency", type=float, default=0.05, help="mean seconds per tool call")
    ap.add_argument("--static-generate", action="store_true", help="also time generate with a static cache")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.model) if args.model else build_model(args.size, Path(tmp) / "model")
        backend = HFBackend(
            path, device=args.device, dtype=args.dtype, max_batch=args.batch, stop_on_eos=False
        )
        n_params = sum(p.numel() for p in backend.model.parameters())
        prompts = make_prompts(backend.tokenizer, args.batch, args.prompt_tokens)
        plans = plan_segments(args.batch, args.new_tokens, args.segment, seed=0)
        timed(backend, plain(backend, prompts[:4], 8))  # warm-up

        gen_tok_s = bench_generate(backend, prompts, args.new_tokens, None)
        static_tok_s = (
            bench_generate(backend, prompts, args.new_tokens, "static") if args.static_generate else None
        )
        n_plain, t_plain, s_plain = timed(backend, plain(backend, prompts, args.new_tokens))
        (n_tool, n_calls), t_tool, s_tool = timed(
            backend, tool_integrated(backend, prompts, args.new_tokens, plans, args.tool_latency)
        )
        n_bar, t_bar, _ = timed(
            backend, with_barrier(backend, prompts, args.new_tokens, plans, args.tool_latency)
        )
        backend.close()

    plain_tok_s, tool_tok_s, bar_tok_s = n_plain / t_plain, n_tool / t_tool, n_bar / t_bar
    result = {
        "device": str(backend._engine.device),
        "dtype": str(next(backend.model.parameters()).dtype),
        "params": n_params,
        "batch": args.batch,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "segment": args.segment,
        "tool_latency_s": args.tool_latency,
        "generate_tok_s": round(gen_tok_s, 1),
        "generate_static_tok_s": round(static_tok_s, 1) if static_tok_s else None,
        "plain_tok_s": round(plain_tok_s, 1),
        "tool_tok_s": round(tool_tok_s, 1),
        "barrier_tok_s": round(bar_tok_s, 1),
        "tool_vs_plain": round(tool_tok_s / plain_tok_s, 3),
        "barrier_vs_plain": round(bar_tok_s / plain_tok_s, 3),
        "plain_vs_generate": round(plain_tok_s / gen_tok_s, 3),
        "tool_mean_batch": round(s_tool["row_steps"] / max(1, s_tool["steps"]), 1),
        "tool_prefills": s_tool["prefills"],
        "tool_calls": n_calls,
        "plain_mean_batch": round(s_plain["row_steps"] / max(1, s_plain["steps"]), 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
