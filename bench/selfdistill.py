"""Self-distillation end to end on the embedded world, on CPU, with the figures of every step.

    python bench/selfdistill.py --workdir /tmp/sd-e2e

Steps: synthetic splits -> tiny student -> teach (programmatic teachers, real sandbox) -> compose ->
SFT (intermediate student) -> self-distill sample (K per problem, the tool loop) -> build (text teacher
object) -> retrain (fresh optimizer) -> evaluate both students on the test split (greedy, tool loop).
Prints one JSON line per step and a final summary line. Every stage writes into --workdir; a rerun
resumes the appended records (teach, sample, eval) but retrains the SFT stages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import time
from pathlib import Path


def emit(step: str, t0: float, **figures) -> None:
    print(json.dumps({"step": step, "seconds": round(time.perf_counter() - t0, 1), **figures}), flush=True)


def evaluate(model_dir: Path, problems, out: Path, budget: int) -> dict:
    from dualdistill.agent.driver import run_many
    from dualdistill.agent.loop import AgentConfig, make_pool
    from dualdistill.backends import HFBackend
    from dualdistill.format.trajectory import strategy_facts

    cfg = AgentConfig(template="compact", budget=budget, temperature=0.0, executor_timeout_s=1.0)
    recs = asyncio.run(
        run_many(problems, HFBackend(model_dir), make_pool(cfg), cfg, samples=1, out_path=out, progress=False)
    )
    group = {p.id: p.metadata["group"] for p in problems}
    by_group: dict[str, list[bool]] = {}
    for r in recs:
        by_group.setdefault(group[r["problem_id"]], []).append(bool(r["correct"]))
    tools = sum(strategy_facts(r["response"]).used_tools for r in recs) / max(len(recs), 1)
    acc = {g: round(sum(v) / len(v), 3) for g, v in sorted(by_group.items())}
    return {
        "accuracy": round(sum(r["correct"] for r in recs) / len(recs), 3),
        "by_group": acc,
        "tool_use": round(tools, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--n", type=int, default=500, help="synthetic problems (80%% train)")
    ap.add_argument("--sample-problems", type=int, default=140, help="train problems sampled for SD")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--budget", type=int, default=256)
    ap.add_argument("--sft-seconds", type=float, default=90)
    ap.add_argument("--retrain-seconds", type=float, default=45)
    ap.add_argument("--eval-problems", type=int, default=70)
    args = ap.parse_args()

    from dualdistill import selfdistill as sd
    from dualdistill.agent.loop import AgentConfig
    from dualdistill.backends import HFBackend
    from dualdistill.compose.run import ComposeConfig, compose_file
    from dualdistill.core.config import load_config
    from dualdistill.sft.train import SFTConfig, train_run
    from dualdistill.synthetic.corpus import synthetic_corpus
    from dualdistill.synthetic.families import generate
    from dualdistill.synthetic.student import build_student
    from dualdistill.synthetic.teachers import (
        ProgrammaticAgenticConfig,
        ProgrammaticAgenticTeacher,
        ProgrammaticTextTeacher,
    )
    from dualdistill.teachers.teach import TeachConfig, teach

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "sft_tiny.yaml"

    t0 = time.perf_counter()
    problems = generate(args.n, seed=0)  # families round-robin; every 5th problem is held out
    train = [p for i, p in enumerate(problems) if i % 5]
    test = [p for i, p in enumerate(problems) if not i % 5]
    student = build_student(work / "student0", corpus=synthetic_corpus(), size="small", seed=0)
    emit("setup", t0, train=len(train), test=len(test))

    t0 = time.perf_counter()
    agentic = ProgrammaticAgenticTeacher(ProgrammaticAgenticConfig(timeout_s=1.0, max_concurrency=8))
    report = asyncio.run(
        teach(train, agentic, ProgrammaticTextTeacher(), work / "teach", TeachConfig(), progress=False)
    )
    emit("teach", t0, pairs=report.pairs, gave_up=report.gave_up)

    t0 = time.perf_counter()
    rep = compose_file(
        work / "teach" / "pairs.jsonl", work / "composed.jsonl", ComposeConfig(decontaminate=False)
    )
    emit("compose", t0, written=rep.written, cases=rep.cases)

    t0 = time.perf_counter()
    shutil.rmtree(work / "sft1", ignore_errors=True)
    cfg1 = load_config(SFTConfig, recipe, [f"max_time_s={args.sft_seconds}", "progress=false"])
    r1 = train_run(cfg1, work / "composed.jsonl", work / "sft1", init_model=str(student))
    emit("sft1", t0, steps=r1.steps, loss=round(r1.train_loss or 0, 4), tokens=r1.stats.tokens)

    t0 = time.perf_counter()
    chosen = train[: args.sample_problems]
    scfg = sd.SampleConfig(
        k=args.k, agent=AgentConfig(budget=args.budget, template="compact", executor_timeout_s=1.0)
    )
    sd.sample(
        chosen, HFBackend(r1.model_dir), work / "samples", scfg, model=str(r1.model_dir), progress=False
    )
    scores = sd.load_samples(work / "samples")
    mean = sum(float(s.s_bar) for s in scores) / len(scores)
    emit("sample", t0, problems=len(scores), k=args.k, mean_s_bar=round(mean, 3),
         fully_solved=sum(s.s_bar == 1 for s in scores))  # fmt: skip

    t0 = time.perf_counter()
    built = sd.build(work / "samples", ProgrammaticTextTeacher(), work / "sd.jsonl")
    summary = sd.report(built.records, built.scores, built.counts)
    emit("build", t0, by_kind=summary["by_kind"], strategy_mix=summary["strategy_mix"],
         by_s_bar=summary["by_s_bar"], counts=summary["counts"])  # fmt: skip
    if not built.records:
        return

    t0 = time.perf_counter()
    shutil.rmtree(work / "sft_sd", ignore_errors=True)
    cfg2 = load_config(SFTConfig, recipe, [f"max_time_s={args.retrain_seconds}", "progress=false", "lr=1e-3"])
    model_sd = sd.retrain(r1.model_dir, work / "sd.jsonl", work / "sft_sd", cfg2)
    steps = json.loads((model_sd / "train_summary.json").read_text())["steps"]
    emit("retrain", t0, steps=steps, records=len(built.records))

    for name, model in (("eval_intermediate", r1.model_dir), ("eval_self_distilled", model_sd)):
        t0 = time.perf_counter()
        out = work / f"{name}.jsonl"
        out.unlink(missing_ok=True)
        emit(name, t0, **evaluate(model, test[: args.eval_problems], out, args.budget))


if __name__ == "__main__":
    main()
