"""Tool-integrated vs plain generation throughput of HFBackend, same model and batch, in one run.

    python bench/generation.py                                    # CPU, tiny random Qwen2
    python bench/generation.py --device cuda --size 15m --batch 64 # GPU, ~15M-parameter Qwen2 in bf16

Four measurements, each ``--trajectories`` (default ``--batch``) trajectories of ``--prompt-tokens``
prompt tokens and ``--new-tokens`` generated tokens (end-of-sequence is ignored so every run generates
the same count), on a backend that batches up to ``--batch`` rows:

- ``generate``: transformers ``model.generate`` on ``--batch`` of them at once (the reference point);
- ``plain``: HFBackend, every trajectory one ``complete`` call;
- ``tool``: HFBackend, every trajectory writes segments of about ``--segment`` tokens, each followed
  by a simulated tool call (``--tool-latency`` seconds, jittered) and an injected executor block,
  with no barrier between trajectories (what the agent loop does);
- ``barrier``: the same trajectories, but every round waits for the whole batch (ToRA-style).

Throughput counts generated tokens only (not prompt or executor tokens) over wall time. The three
backend measurements repeat ``--repeats`` times (default 3), interleaved and in a rotating order, so
load that comes and goes hits each of them alike. The last line printed is one JSON object with the
medians and the median ratios ``tool / plain``, ``barrier / plain`` and ``plain / generate`` (each
ratio is the median of the per-repeat ratios); ``runs`` holds every repeat's figures.

``--profile`` adds one line per measurement, before the last, with where the engine thread's time went
(``profile_engine``): prompt tokenization (``make_row``, on the caller's thread), admissions (prefix
search and copy, parked rows moved out of their slot), forward passes, planning a pass and writing its
keys/values (the engine's ``SlotCache``), sampling, token bookkeeping and stop checks (``record``),
retiring rows, completion decoding, and the time the engine sat idle waiting for work (tool calls and
the event loop). The random model never writes ``</code>`` by itself, so segment ends stand in for
code blocks; a continuation finds its earlier segments' keys/values where its row left them (its
parked slot, or the parking slot it was moved to), so only the injected executor tokens are computed
again (``tool_read_tokens`` counts the prompt and executor tokens computed).

``tool / plain`` is about ``plain_vs_tool_steps / tool_vs_plain_pass_time``: the first is the
workload's share (while a row waits for its tool it does not decode, so the tool run needs more
forward passes for the same tokens; an engine whose tool passes cost what plain ones do reaches about
this ratio, a little less since faster passes make each wait span more of them), the second the
engine's (its busy time per pass, tool run over plain run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

from dualdistill.backends import BackendConfig
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


def off_main_thread(fn, *args):
    """``fn(*args)`` on a thread of its own that ends with it. A torch op big enough to run in parallel
    gives its thread an OpenMP pool that lives as long as the thread; with the engine's pool beside it
    there are more OpenMP threads than cores, and libgomp then puts idle workers to sleep at once, so
    every parallel op of the engine pays a wake-up (3x slower ops; plain generation half as fast on 2 cores).
    ``model.generate`` on the main thread left every later measurement in that state."""
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn(*args)))
    thread.start()
    thread.join()
    if not out:
        raise RuntimeError(f"{fn.__name__} failed on its thread (its traceback is above)")
    return out[0]


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


def timed(backend: HFBackend, coro, profile: bool = False) -> tuple[object, float, dict]:
    if profile:
        with EngineProfile(backend) as prof:
            result, seconds, stats = timed(backend, coro)
        stats["profile_engine"] = prof.breakdown(seconds)
        return result, seconds, stats
    backend.reset_stats()
    backend.clear_prefix_cache()  # each measurement starts cold; no reuse across them
    _sync()
    t0 = time.perf_counter()
    result = asyncio.run(coro)
    _sync()
    return result, time.perf_counter() - t0, backend.stats().as_dict()


# Engine methods timed by --profile, with the name each is reported under.
PROFILED = {
    "make_row": "tokenize_prompt",
    "_admit": "admit_other",
    "_place": "admit_find_and_copy_prefix",
    "_free_slot": "admit_move_out_parked",
    "_step": "step_other",
    "_sample": "sample",
    "_record": "record_and_stop_checks",
    "_retire": "retire",
    "_completion": "decode_completion",
}
# The same for the engine's KV cache: planning a packed pass, writing the new keys/values.
PROFILED_CACHE = {"plan": "plan_pass", "update": "cache_write"}


class EngineProfile:
    """Times the backend's engine methods and the model's forward for one measurement. Times are
    exclusive (a method's time leaves out the timed calls inside it), so the parts add up to the engine's
    busy time; a forward pass counts as ``forward_admit`` inside an admission, else ``forward_step``."""

    def __init__(self, backend: HFBackend):
        self.backend, self.engine = backend, backend._engine
        self.seconds: dict[str, float] = {}
        self._local = (
            threading.local()
        )  # prompts are tokenized on the caller's thread, the rest on the engine's

    @property
    def _stack(self) -> list[list]:
        """This thread's open timed calls: [name, seconds spent in timed calls inside it]."""
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def _timed(self, name_of, original):
        def call(*args, **kwargs):
            name = name_of()
            self._stack.append([name, 0.0])
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                _sync()
                elapsed = time.perf_counter() - t0
                _, inner = self._stack.pop()
                self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - inner
                if self._stack:
                    self._stack[-1][1] += elapsed

        return call

    def __enter__(self) -> EngineProfile:
        for obj, table in ((self.engine, PROFILED), (self.engine.cache, PROFILED_CACHE)):
            for attr, name in table.items():
                setattr(obj, attr, self._timed(lambda n=name: n, getattr(obj, attr)))
        in_admit = lambda: any(n.startswith("admit") for n, _ in self._stack)  # noqa: E731
        self.engine.model.forward = self._timed(
            lambda: "forward_admit" if in_admit() else "forward_step", self.engine.model.forward
        )
        return self

    def __exit__(self, *exc) -> None:
        for obj, table in ((self.engine, PROFILED), (self.engine.cache, PROFILED_CACHE)):
            for attr in table:
                obj.__dict__.pop(attr, None)  # back to the class's methods
        self.engine.model.__dict__.pop("forward", None)

    def breakdown(self, wall: float) -> dict:
        """Seconds per part, the engine's busy and idle time, and the admissions and steps counted."""
        stats = self.backend.stats()
        out = {"wall_s": wall, "engine_busy_s": stats.gen_time_s, "engine_idle_s": wall - stats.gen_time_s}
        out |= {f"{k}_s": v for k, v in sorted(self.seconds.items())}
        out = {k: round(v, 3) for k, v in out.items()}
        return out | {"prefills": stats.prefills, "steps": stats.steps}


# ----------------------------------------------------------------------------- the library's engine
def library_config(batch: int, prompt_tokens: int, new_tokens: int, extra: int = 0):
    """transformers' continuous batching sized for this workload: enough KV blocks for every row's
    prompt, generation and ``extra`` tokens (injected executor output), prefill in 2,048-token chunks.
    Left to size itself from free memory, it allocates for the whole machine and runs far slower here."""
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    page = ContinuousBatchingConfig.page_size
    blocks = batch * (-(-(prompt_tokens + new_tokens + extra) // page) + 1)
    return ContinuousBatchingConfig(num_blocks=blocks, max_batch_tokens=2048)


def library_generation_config(tokenizer, new_tokens: int):
    from transformers import GenerationConfig

    # eos disabled (as stop_on_eos=False in ours), so every row generates the same count
    return GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=-1,
                            pad_token_id=tokenizer.pad_token_id)  # fmt: skip


def bench_library_plain(model, tokenizer, prompts: list[str], new_tokens: int, cb_config) -> float:
    """``model.generate_batch``: every prompt one request, generated tokens/s (after a warm-up)."""
    ids = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    config = library_generation_config(tokenizer, new_tokens)
    model.generate_batch(inputs=ids[:2], generation_config=library_generation_config(tokenizer, 4),
                         continuous_batching_config=cb_config, warmup=False)  # fmt: skip
    t0 = time.perf_counter()
    out = model.generate_batch(inputs=ids, generation_config=config, continuous_batching_config=cb_config,
                               warmup=False)  # fmt: skip
    seconds = time.perf_counter() - t0
    return sum(len(o.generated_tokens) for o in out.values()) / seconds


async def library_tool(model, tokenizer, prompts, new_tokens, plans, latency, cb_config) -> tuple[int, float]:
    """The ``tool`` workload on the library's manager: each segment is a new request of the whole
    context so far (the library has no continuation of a finished request; its block sharing may reuse
    the prefix), max_new_tokens set per request. Returns (generated tokens, seconds)."""
    loop = asyncio.get_running_loop()
    waiting: dict[str, asyncio.Future] = {}
    config = library_generation_config(tokenizer, max(max(s) for s in plans))
    manager = model.init_continuous_batching(generation_config=config, continuous_batching_config=cb_config)
    manager.start()
    stop = threading.Event()

    def route() -> None:  # the manager's results, to the waiting trajectory
        while not stop.is_set():
            out = manager.get_result(timeout=0.05)
            if out is not None:
                future = waiting.pop(out.request_id)
                loop.call_soon_threadsafe(future.set_result, out)

    router = threading.Thread(target=route, daemon=True)
    router.start()
    counter = iter(range(10**9))

    async def complete(ids: list[int], n: int) -> list[int]:
        rid = f"r{next(counter)}"
        waiting[rid] = loop.create_future()
        manager.add_request(ids, request_id=rid, max_new_tokens=n)
        return (await waiting[rid]).generated_tokens

    async def one(prompt: str, segments: list[int], rng: random.Random) -> int:
        ids, generated = tokenizer.encode(prompt, add_special_tokens=False), 0
        for seg in segments:
            out = await complete(ids, min(seg, new_tokens - generated))
            generated += len(out)
            ids = ids + out
            if generated >= new_tokens:
                break
            await asyncio.sleep(latency * rng.uniform(0.5, 1.5))
            ids = ids + tokenizer.encode(executor_block(str(rng.randint(0, 10**6))), add_special_tokens=False)
        return generated

    rng = random.Random(0)
    t0 = time.perf_counter()
    try:
        n = sum(await asyncio.gather(*(one(p, s, rng) for p, s in zip(prompts, plans, strict=True))))
    finally:
        seconds = time.perf_counter() - t0
        stop.set()
        router.join()
        manager.stop(block=True)
    return n, seconds


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_library(args, path: Path, prompts: list[str], plans: list[list[int]]) -> dict:
    """The library's figures, on its own copy of the model (its paged attention changes the model)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32 if args.device in ("auto", "cpu")
                                                 and not torch.cuda.is_available() else torch.bfloat16)  # fmt: skip
    model = model.to("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu").eval()
    extra = 64 * max(len(s) for s in plans)  # executor blocks of the tool workload
    cb = library_config(len(prompts), args.prompt_tokens, args.new_tokens, extra)
    plain_tok_s = bench_library_plain(model, tokenizer, prompts, args.new_tokens, cb)
    n, seconds = asyncio.run(
        library_tool(model, tokenizer, prompts, args.new_tokens, plans, args.tool_latency, cb)
    )
    return {"library_plain_tok_s": round(plain_tok_s, 1), "library_tool_tok_s": round(n / seconds, 1)}


def pass_time(run: dict, job: str) -> float:
    """The engine's mean seconds per forward pass (admissions, pass and retiring) in one measurement."""
    stats = run[f"{job}_stats"]
    return stats["gen_time_s"] / max(1, stats["steps"])


def ratio_of(runs: list[dict], value, a: str, b: str) -> float:
    """The median over repeats of ``value(run, a) / value(run, b)``."""
    return round(statistics.median(value(run, a) / value(run, b) for run in runs), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (default: build a random one of --size)")
    ap.add_argument("--size", default="tiny", help="tiny | small | base | 15m (when no --model)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch", type=int, default=64, help="the backend's max_batch")
    ap.add_argument(
        "--trajectories",
        type=int,
        help="trajectories (plain: requests) in flight; default --batch. The agent driver runs more than "
        "max_batch at once (concurrency 256), so the batch stays full while some wait for their tools",
    )
    ap.add_argument(
        "--parked-slots",
        type=int,
        default=BackendConfig.parked_slots,
        help="the backend's parked_slots (0: rows moved out of a running slot go to the prefix cache)",
    )
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--segment", type=int, default=64, help="mean tokens between tool calls")
    ap.add_argument("--tool-latency", type=float, default=0.05, help="mean seconds per tool call")
    ap.add_argument("--static-generate", action="store_true", help="also time generate with a static cache")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the backend measurements")
    ap.add_argument("--profile", action="store_true", help="print where the engine's time went, per run")
    ap.add_argument(
        "--library",
        action="store_true",
        help="also time transformers' continuous batching (generate_batch, and the tool loop on its manager)",
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.model) if args.model else build_model(args.size, Path(tmp) / "model")
        backend = HFBackend(
            path,
            device=args.device,
            dtype=args.dtype,
            max_batch=args.batch,
            parked_slots=args.parked_slots,
            stop_on_eos=False,
        )
        n_params = sum(p.numel() for p in backend.model.parameters())
        n_traj = args.trajectories or args.batch
        prompts = make_prompts(backend.tokenizer, n_traj, args.prompt_tokens)
        plans = plan_segments(n_traj, args.new_tokens, args.segment, seed=0)
        # generate first, while the engine's thread has no OpenMP pool yet (see off_main_thread)
        off_main_thread(bench_generate, backend, prompts[:2], 2, None)  # warm-up
        gen_tok_s = off_main_thread(bench_generate, backend, prompts[: args.batch], args.new_tokens, None)
        static_tok_s = (
            off_main_thread(bench_generate, backend, prompts[: args.batch], args.new_tokens, "static")
            if args.static_generate
            else None
        )
        timed(backend, plain(backend, prompts[:4], 8))  # warm-up
        jobs = {
            "plain": lambda: plain(backend, prompts, args.new_tokens),
            "tool": lambda: tool_integrated(backend, prompts, args.new_tokens, plans, args.tool_latency),
            "barrier": lambda: with_barrier(backend, prompts, args.new_tokens, plans, args.tool_latency),
        }
        runs = []
        for r in range(args.repeats):
            order = list(jobs)[r % 3 :] + list(jobs)[: r % 3]  # rotate, so no job always runs first
            run = {"repeat": r, "order": order}
            for name in order:
                out, seconds, stats = timed(backend, jobs[name](), profile=args.profile)
                n = out[0] if isinstance(out, tuple) else out
                run[f"{name}_tok_s"] = round(n / seconds, 1)
                run[f"{name}_stats"] = stats
                if name == "tool":
                    run["tool_calls"] = out[1]
                if args.profile:
                    print(json.dumps({"repeat": r, "job": name, "profile_engine": stats["profile_engine"]}))
            runs.append(run)
        device = str(backend._engine.device)
        dtype = str(next(backend.model.parameters()).dtype)
        backend.close()
        library = run_library(args, path, prompts, plans) if args.library else {}

    med = lambda key: statistics.median(run[key] for run in runs)  # noqa: E731
    ratio = lambda a, b: ratio_of(runs, lambda run, key: run[key], a, b)  # noqa: E731
    tool_stats = [run["tool_stats"] for run in runs]
    result = {
        "device": device,
        "dtype": dtype,
        "params": n_params,
        "batch": args.batch,
        "trajectories": n_traj,
        "parked_slots": args.parked_slots,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "segment": args.segment,
        "tool_latency_s": args.tool_latency,
        "repeats": args.repeats,
        "generate_tok_s": round(gen_tok_s, 1),
        "generate_static_tok_s": round(static_tok_s, 1) if static_tok_s else None,
        "plain_tok_s": med("plain_tok_s"),
        "tool_tok_s": med("tool_tok_s"),
        "barrier_tok_s": med("barrier_tok_s"),
        "tool_vs_plain": ratio("tool_tok_s", "plain_tok_s"),
        "barrier_vs_plain": ratio("barrier_tok_s", "plain_tok_s"),
        "tool_vs_barrier": ratio("tool_tok_s", "barrier_tok_s"),
        "plain_vs_generate": round(med("plain_tok_s") / gen_tok_s, 3),
        "tool_mean_batch": round(
            statistics.median(s["row_steps"] / max(1, s["steps"]) for s in tool_stats), 1
        ),
        "tool_prefills": statistics.median(s["prefills"] for s in tool_stats),
        # prompt and executor tokens computed (not reused from a slot or the prefix cache)
        "tool_read_tokens": statistics.median(s["prompt_tokens"] - s["reused_tokens"] for s in tool_stats),
        "tool_calls": med("tool_calls"),
        # tool / plain splits into these two: the workload's passes (a tool run needs more: rows idle
        # while their tool runs), and what each pass costs the engine (its time per pass, tool / plain)
        "plain_vs_tool_steps": ratio_of(runs, lambda run, job: run[f"{job}_stats"]["steps"], "plain", "tool"),
        "tool_vs_plain_pass_time": ratio_of(runs, pass_time, "tool", "plain"),
        "plain_mean_batch": round(
            statistics.median(
                r["plain_stats"]["row_steps"] / max(1, r["plain_stats"]["steps"]) for r in runs
            ),
            1,
        ),
        **library,
        "runs": [{k: v for k, v in run.items() if not k.endswith("_stats")} for run in runs],
    }
    if library:
        result["library_plain_vs_plain"] = round(library["library_plain_tok_s"] / result["plain_tok_s"], 3)
        result["library_tool_vs_tool"] = round(library["library_tool_tok_s"] / result["tool_tok_s"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
