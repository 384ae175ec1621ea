"""Evaluation runs: generate graded records over benchmarks, resume, report, plot, regrade.

Workflow (``run_eval``)::

    DIR/config.yaml    the resolved EvalConfig (checked against on resume)
    DIR/records.jsonl  one graded AgentRecord per (benchmark, problem, sample), appended and flushed
    DIR/report.json    summarize() per benchmark
    DIR/report.md      the same as tables
    DIR/report.png     accuracy and tool-use rate per benchmark

Guarantees:
- Rerunning with the same ``DIR`` resumes: records already there are kept, missing ones generated; the
  final report is computed from the file alone, so an interrupted-then-resumed run reports the same
  metrics as an uninterrupted one with the same seed (for a deterministic backend).
- A rerun whose generation settings (model, seed, budget, temperature, tools, ...) differ from
  ``DIR/config.yaml`` is refused with a ``ConfigError`` naming the key, so one file never mixes runs.
- ``regrade`` rewrites only the verdict fields, atomically; it never generates.

Metrics (per benchmark; the problem is the sampling unit):
- accuracy: mean over problems of the share of correct samples (= mean over samples of accuracy),
  with a 95% normal interval from the spread of per-problem scores;
- pass@k: the unbiased estimator 1 - C(n-c, k) / C(n, k) (Chen et al., 2021), mean over problems;
- maj@k: majority vote over the extracted answers of the first k samples (exact string match after
  whitespace removal; a tie counts as the expected score of a random pick among tied answers);
- tool-use rate (responses with >= 1 code block), strategy-switch rate (``trajectory.strategy_facts``),
  mean tokens, executor status counts, share of time in tools (tool time / (generation + tool time)).

Not guaranteed: maj@k groups answers by their text, so equivalent forms (1/2 vs 0.5) vote apart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dualdistill.agent import AgentConfig, make_pool, read_agent_records, record_key, run_many
from dualdistill.config import ConfigError, check_bounds, from_dict, identity, save_config, setting
from dualdistill.problems import Problem, load_benchmark
from dualdistill.records import DataError, locked, provenance, unique_records, write_jsonl
from dualdistill.resume import check_identity, model_fingerprint
from dualdistill.shards import check_shard, mark, take
from dualdistill.trajectory import strategy_facts

DEFAULT_BENCHES = ("math500", "aime2025", "amc", "combinatorics300")
RECORDS, CONFIG = "records.jsonl", "config.yaml"


@dataclass
class EvalConfig:
    model: str = setting(
        "", help="Local HF model directory, or an http(s) URL of an OpenAI-compatible server."
    )
    benches: list[str] = setting(default_factory=lambda: list(DEFAULT_BENCHES), scope=True)
    # Only this share of the problems, I/N (0 <= I < N), chosen by a hash of each id; `merge` joins the
    # N shards' outputs. Empty: all problems.
    shard: str = setting(
        "", help="Only the share I/N of the problems (by a hash of each id); merge joins the N shards."
    )
    samples: int = setting(1, ge=1, scope=True, help="Samples per problem.")
    limit: int | None = setting(None, ge=1, scope=True, help="Only the first N problems of each benchmark.")
    seed: int = setting(0, help="Sampling seed.")
    served_model_name: str | None = setting(
        None, help="Model name sent to the server (default: its first model)."
    )
    # a server's API: completions (vLLM, SGLang, transformers serve) or chat (hosted models; the tool
    # loop continues a response with vLLM's continue_final_message)
    api: Literal["completions", "chat"] = setting(
        "completions", help="A server's API: completions, or chat (continues with continue_final_message)."
    )
    # a server model's tokenizer (dir or hub id): counts injected executor text exactly against the
    # budget (the server reports only what it generated); without it, 4 bytes a token
    tokenizer: str | None = setting(
        None, speed=True, help="A server model's tokenizer (dir or hub id): counts executor text exactly."
    )
    api_key_env: str = setting(
        "OPENAI_API_KEY", speed=True, help="Environment variable holding a server's API key."
    )
    request_timeout_s: float = setting(
        600.0, gt=0, speed=True, help="Seconds one request to a server may take in all before it is retried."
    )
    # per request, for server backends (exponential backoff between tries)
    max_retries: int = setting(5, ge=0, speed=True, help="Retries per request to a server.")
    device: str = setting("auto", speed=True, help="Device of a local model: auto, cpu, cuda.")
    max_batch: int = setting(64, ge=1, speed=True, help="Sequences per forward pass (local models).")
    # Also write the summary as TensorBoard scalars here (e.g. the training run's OUT/runs).
    log_dir: str | None = setting(
        None, speed=True, help="Also write the summary as TensorBoard scalars here."
    )
    agent: AgentConfig = field(default_factory=AgentConfig)

    def __post_init__(self) -> None:
        check_bounds(self)
        check_shard(self.shard)


# ----------------------------------------------------------------------------- metrics
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples of which ``c`` are correct (Chen et al., 2021)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def maj_at_k(records: list[dict], k: int) -> float:
    """Majority-vote score over the first ``k`` samples (by sample index) of one problem."""
    first = sorted(records, key=lambda r: r["sample_index"])[:k]
    votes: dict[str, list[bool]] = defaultdict(list)
    for r in first:
        if r.get("extracted") is not None:
            votes["".join(str(r["extracted"]).split())].append(bool(r.get("correct")))
    if not votes:
        return 0.0
    top = max(len(v) for v in votes.values())
    tied = [v for v in votes.values() if len(v) == top]
    return sum(1.0 for v in tied if any(v)) / len(tied)


def k_values(n: int) -> list[int]:
    """1, 2, 4, ... up to ``n``, and ``n`` itself."""
    ks = [1 << i for i in range(n.bit_length()) if (1 << i) <= n]
    return sorted({*ks, n})


def _interval(scores: list[float]) -> tuple[float, float, float]:
    mean = sum(scores) / len(scores)
    if len(scores) < 2:
        return mean, mean, mean
    var = sum((s - mean) ** 2 for s in scores) / (len(scores) - 1)
    half = 1.96 * math.sqrt(var / len(scores))
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def summarize(records: list[dict], problems_by_id: dict[str, Problem] | None = None) -> dict[str, Any]:
    """Metrics for the records of ONE benchmark. ``problems_by_id`` adds problems that have no record."""
    by_problem: dict[str, list[dict]] = defaultdict(list)
    # Sorted by problem and sample, so the float sums do not depend on the order records were appended
    # in (concurrent generation and resume change it).
    for r in sorted(records, key=lambda r: (str(r["problem_id"]), int(r.get("sample_index", 0)))):
        by_problem[str(r["problem_id"])].append(r)
    missing = sorted(set(problems_by_id or ()) - set(by_problem))
    if not by_problem:
        return {"problems": 0, "records": 0, "missing_problems": len(missing)}
    n_min = min(len(v) for v in by_problem.values())
    scores = [sum(bool(r.get("correct")) for r in v) / len(v) for v in by_problem.values()]
    acc, low, high = _interval(scores)
    ks = k_values(n_min)
    facts = [strategy_facts(r["response"]) for r in records]
    statuses = Counter(c["status"] for r in records for c in r.get("tool_calls", []))
    gen = sum(float(r.get("gen_time_s", 0.0)) for r in records)
    tool = sum(float(r.get("tool_time_s", 0.0)) for r in records)
    return {
        "problems": len(by_problem),
        "records": len(records),
        "samples_per_problem": n_min,
        "missing_problems": len(missing),
        "accuracy": acc,
        "accuracy_ci95": [low, high],
        "pass_at_k": {
            str(k): _mean([pass_at_k(len(v), _correct(v), k) for v in by_problem.values()]) for k in ks
        },
        "maj_at_k": {str(k): _mean([maj_at_k(v, k) for v in by_problem.values()]) for k in ks},
        "tool_use_rate": _mean([f.used_tools for f in facts]),
        "strategy_switch_rate": _mean([f.switched for f in facts]),
        "mean_tokens": _mean([r.get("n_tokens", 0) for r in records]),
        "mean_tool_calls": _mean([len(r.get("tool_calls", [])) for r in records]),
        "executor_status_counts": dict(sorted(statuses.items())),
        "finish_reasons": dict(sorted(Counter(r.get("finish_reason", "?") for r in records).items())),
        "tool_time_share": tool / (gen + tool) if gen + tool > 0 else 0.0,
        "gen_time_s": gen,
        "tool_time_s": tool,
    }


def _mean(values: list) -> float:
    return sum(float(v) for v in values) / len(values) if values else 0.0


def _correct(records: list[dict]) -> int:
    return sum(bool(r.get("correct")) for r in records)


def summarize_by_source(records: list[dict], problems: dict[str, list[Problem]] | None = None) -> dict:
    """``summarize`` per benchmark (the records' ``source``), in the order of ``problems`` if given."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[str(r.get("source", ""))].append(r)
    names = list(problems or {}) + [g for g in groups if g not in (problems or {})]
    return {
        name: summarize(groups.get(name, []), {p.id: p for p in (problems or {}).get(name, [])})
        for name in names
    }


# ----------------------------------------------------------------------------- report files
def write_report(out_dir: str | Path, summaries: dict[str, dict], *, meta: dict | None = None) -> None:
    """Write report.json, report.md and report.png for ``{benchmark: summarize(...)}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {**provenance("eval"), **(meta or {}), "benchmarks": summaries}
    (out_dir / "report.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (out_dir / "report.md").write_text(report_markdown(summaries, meta=meta), encoding="utf-8")
    plot_report(summaries, out_dir / "report.png")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def report_markdown(summaries: dict[str, dict], *, meta: dict | None = None) -> str:
    lines = ["# Evaluation report", ""]
    if meta:
        lines += [f"- {k}: `{v}`" for k, v in meta.items()] + [""]
    head = "| benchmark | problems | n | accuracy % (95% CI) | pass@k % | maj@k % | tool use % | switch % | mean tokens | tool time % |"
    lines += [head, "|" + "---|" * 10]
    for name, s in summaries.items():
        if not s.get("records"):
            lines.append(f"| {name} | 0 | 0 | - | - | - | - | - | - | - |")
            continue
        low, high = s["accuracy_ci95"]
        passk = ", ".join(f"@{k} {_pct(v)}" for k, v in s["pass_at_k"].items())
        majk = ", ".join(f"@{k} {_pct(v)}" for k, v in s["maj_at_k"].items())
        lines.append(
            f"| {name} | {s['problems']} | {s['samples_per_problem']} | {_pct(s['accuracy'])} "
            f"({_pct(low)}–{_pct(high)}) | {passk} | {majk} | {_pct(s['tool_use_rate'])} | "
            f"{_pct(s['strategy_switch_rate'])} | {s['mean_tokens']:.0f} | {_pct(s['tool_time_share'])} |"
        )
    lines += ["", "## Executor statuses and finish reasons", ""]
    for name, s in summaries.items():
        if s.get("records"):
            lines.append(
                f"- {name}: executor {s['executor_status_counts'] or '{}'}; finish {s['finish_reasons']}"
            )
    return "\n".join(lines) + "\n"


def plot_report(summaries: dict[str, dict], path: str | Path) -> None:
    """A grouped bar chart: accuracy (with its 95% interval) and tool-use rate per benchmark."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, s in summaries.items() if s.get("records")]
    acc = [100 * summaries[n]["accuracy"] for n in names]
    err = [
        [a - 100 * summaries[n]["accuracy_ci95"][0] for a, n in zip(acc, names, strict=True)],
        [100 * summaries[n]["accuracy_ci95"][1] - a for a, n in zip(acc, names, strict=True)],
    ]
    tools = [100 * summaries[n]["tool_use_rate"] for n in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(names) + 2), 3.5))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], acc, 0.4, yerr=err, capsize=3, label="accuracy")
    ax.bar([x + 0.2 for x in xs], tools, 0.4, label="tool-use rate")
    ax.set_xticks(list(xs), names)
    ax.set_ylim(0, 100)
    ax.set_ylabel("%")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- runs
def load_benches(names: list[str], *, limit: int | None = None) -> dict[str, list[Problem]]:
    """``{source: problems}`` for built-in names or problem files; two files with one stem are refused."""
    out: dict[str, list[Problem]] = {}
    for name in names:
        problems = load_benchmark(name, limit=limit)
        source = problems[0].source if problems else Path(name).stem
        if source in out:
            raise DataError(name, f"benchmark {source!r} given twice (two files with the same name?)")
        out[source] = problems
    return out


def model_identity(config: dict) -> str:
    """What must match to resume: the served model's name for a server (which may move to another
    host or port between runs), else the model path."""
    model = str(config.get("model") or "")
    if model.startswith(("http://", "https://")):
        url, _, name = model.partition("#")
        return f"served:{name or config.get('served_model_name') or url}"
    return model


def eval_identity(config: EvalConfig) -> dict:
    """What an eval record depends on: every setting but the speed and scope ones, the model by
    ``model_identity`` (a server's name, not its address)."""
    ident = identity(config)
    ident.pop("served_model_name")
    ident["model"] = model_identity(dataclasses.asdict(config))
    return ident


def check_resume(out_dir: Path, config: EvalConfig) -> None:
    """Refuse to append to records made with settings that change what a record holds."""
    path = out_dir / CONFIG
    if not path.exists() or not (out_dir / RECORDS).exists():
        return
    from dualdistill.config import flat_differences, load_config

    old = eval_identity(load_config(EvalConfig, path))  # keys older files lack take their defaults
    new = eval_identity(config)
    for key in flat_differences(old, new):
        was, now = _at(old, key), _at(new, key)
        raise ConfigError(
            f"{path}: key '{key}' was {was!r}, now {now!r}; these records came from other settings "
            "(use a new --out, or the old settings to resume)"
        )


def _at(node: dict, dotted: str):
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def make_backend(config: EvalConfig) -> Any:
    """The evaluated model's backend (``backends.open_backend``, the one way every command opens one)."""
    from dualdistill.backends import open_backend

    return open_backend(
        config.model, api=config.api, template=config.agent.template, served_model_name=config.served_model_name,
        tokenizer=config.tokenizer, api_key_env=config.api_key_env, max_retries=config.max_retries,
        request_timeout=config.request_timeout_s, device=config.device, max_batch=config.max_batch,
    )  # fmt: skip


def run_eval(config: EvalConfig, out_dir: str | Path, *, backend: Any = None, progress: bool = True) -> dict:
    """Generate (or resume) the records of ``config`` in ``out_dir`` and write the report."""
    out_dir = Path(out_dir)
    if config.log_dir:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("log_dir: tensorboard is not installed (pip install tensorboard)")
    everything = load_benches(config.benches, limit=config.limit)
    problems = {b: take(ps, config.shard) for b, ps in everything.items()}
    with locked(out_dir, "eval"):
        check_resume(out_dir, config)
        # The weights, not the path: retrained weights at the same path must not be mixed in.
        local = Path(config.model).is_dir()
        weights = model_fingerprint(config.model) if local else model_identity(dataclasses.asdict(config))
        check_identity(out_dir, "eval", {"model_weights": weights}, RECORDS)
        mark(out_dir, config.shard, [p for ps in everything.values() for p in ps])
        return _run_eval(config, out_dir, problems, backend, progress)


def _run_eval(config: EvalConfig, out_dir: Path, problems: dict, backend: Any, progress: bool) -> dict:
    own_backend = backend is None
    backend = make_backend(config) if own_backend else backend
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / CONFIG)
    everything = [p for ps in problems.values() for p in ps]

    async def generate() -> list[dict]:
        pool = make_pool(config.agent) if config.agent.tools else None
        try:
            return await run_many(
                everything,
                backend,
                pool,
                config.agent,
                samples=config.samples,
                out_path=out_dir / RECORDS,
                seed=config.seed,
                progress=progress,
            )
        finally:
            if pool is not None:
                await pool.close()

    try:
        records = asyncio.run(generate())
    finally:
        if own_backend:
            backend.close()
    summaries = summarize_by_source(records, problems)
    write_report(out_dir, summaries, meta=_meta(config))
    if config.log_dir:
        log_summaries(config.log_dir, summaries)
    return summaries


def log_summaries(log_dir: str | Path, summaries: dict[str, dict]) -> None:
    """The headline numbers of each benchmark as TensorBoard scalars (``eval/<bench>/<metric>``)."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(log_dir)) as writer:
        for bench, s in summaries.items():
            if not s.get("records"):
                continue
            for key in ("accuracy", "tool_use_rate", "mean_tokens", "strategy_switch_rate"):
                if isinstance(s.get(key), (int, float)):
                    writer.add_scalar(f"eval/{bench}/{key}", s[key])
            low, high = s["accuracy_ci95"]
            writer.add_scalar(f"eval/{bench}/accuracy_ci95_low", low)
            writer.add_scalar(f"eval/{bench}/accuracy_ci95_high", high)


def _meta(config: EvalConfig) -> dict:
    a = config.agent
    return {
        "model": config.model, "samples": config.samples, "budget": a.budget, "tools": a.tools,
        "template": a.template, "temperature": a.temperature, "seed": config.seed,
    }  # fmt: skip


def load_eval_config(out_dir: Path) -> EvalConfig:
    import yaml

    path = out_dir / CONFIG
    if not path.exists():
        raise DataError(path, "no config.yaml here; is this an eval output directory?")
    return from_dict(EvalConfig, yaml.safe_load(path.read_text(encoding="utf-8")) or {}, source=str(path))


def regrade(out_dir: str | Path) -> dict:
    """Re-grade ``out_dir/records.jsonl`` with the current grader (no generation); rewrite the report."""
    out_dir = Path(out_dir)
    path = out_dir / RECORDS
    if not path.exists():
        raise DataError(path, "no records to regrade")
    config = load_eval_config(out_dir)
    with locked(out_dir, "eval"):
        return _regrade(out_dir, path, config)


def _regrade(out_dir: Path, path: Path, config: EvalConfig) -> dict:
    rows = [r.to_dict() for _, r in read_agent_records(path, allow_torn_tail=True)]
    rows = unique_records(rows, record_key, path=path)
    from dualdistill.grading import grade_many

    pairs = [(str(r["response"]), str(r["gold"])) for r in rows]
    for r, v in zip(rows, grade_many(pairs, timeout=config.agent.grade_timeout_s), strict=True):
        r.update(correct=bool(v.correct), extracted=v.extracted, grade_status=v.status)
    write_jsonl(path, rows)
    summaries = summarize_by_source(rows)
    write_report(out_dir, summaries, meta={**_meta(config), "regraded": True})
    return summaries
