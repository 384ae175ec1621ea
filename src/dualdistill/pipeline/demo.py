"""``dualdistill demo``: the embedded recipe end to end, then the paper-style table and plots.

The table has one row per student (text-only, code-only, DualDistill, DualDistill + self-distillation)
and one column per test split of the synthetic world (tool-favoured, text-favoured, mixed: accuracy
with a 95% interval), then the whole test split ("overall", the analogue of a benchmark that needs
both strategies), the tool-use rate per split and the strategy-switch rate.

Guarantees: every number in the table is read from what the run wrote: the per-split summaries from
``eval/<student>/report.json``, and the overall one by ``evaluate.metrics.summarize`` over the same records
(``eval/<student>/records.jsonl``); nothing is typed in. ``report.md``, ``results.json`` and two PNG
plots are written into the work directory.
Not guaranteed: the *shape* of the result. The demo prints what the run measured, whatever it is.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from dualdistill.agent.record import read_agent_records
from dualdistill.evaluate.metrics import summarize
from dualdistill.evaluate.run import RECORDS
from dualdistill.pipeline.paired import Paired, paired, sample_sd
from dualdistill.pipeline.recipe import load_recipe
from dualdistill.pipeline.run import Layout, Recipe, run, seed_overrides, student_names
from dualdistill.pipeline.stages import Runner

ROW_NAMES = {
    "text_only": "Text-only student (≈ DeepSeek-R1-Distill)",
    "code_only": "Code-only student (≈ tool-using instruct model)",
    "code_from_text": "Control: code-only data from the text-only student, DualDistill's steps",
    "union": "Control: both teachers' right attempts, uncomposed, DualDistill's steps",
    "dualdistill_paper": "Control: DualDistill with the paper's right-right order",
    "dualdistill": "DualDistill student (≈ Agentic-R1), right-right pairs end with the tool",
    "dualdistill_more": "Control: DualDistill trained on, as many steps as self-distillation",
    "dualdistill_sd": "DualDistill + self-distillation (strategy rule, best-teacher repair)",
    "dualdistill_sd_text": "DualDistill + self-distillation, paper rule and text repair (≈ Agentic-R1-SD)",
}
SPLITS = (("test_tool", "tool-favoured"), ("test_text", "text-favoured"), ("test_mixed", "mixed"))


OVERALL = "overall"
BUDGET = "budget"
COLUMNS = (*SPLITS, (OVERALL, "overall"))


def budget(model_dir: Path) -> dict:
    """What a student cost, from the ``train_summary.json`` of its model and of every model it started
    from: ``start`` (the model it started from), and over the whole chain of training runs ``steps``
    (optimizer steps), ``example_passes`` (examples × epochs run) and ``trained_tokens`` (loss-bearing
    tokens × epochs run)."""
    out = {"start": None, "steps": 0, "example_passes": 0, "trained_tokens": 0}
    path = Path(model_dir) / "train_summary.json"
    while path.exists():
        summary = json.loads(path.read_text(encoding="utf-8"))
        init = Path(summary["init_model"])
        if not init.exists():  # a relative path from another working directory: the sibling student
            init = path.parents[2] / init.parent.name / init.name
        # models/NAME/model is student NAME; models/init is the run's initial model (the shipped base)
        out["start"] = out["start"] or (init.parent.name if init.name == "model" else "base")
        epochs = max((e.get("epoch", 0.0) for e in summary.get("log_history", [])), default=0.0)
        out["steps"] += summary["steps"]
        out["example_passes"] += round(summary["stats"]["kept"] * epochs)
        out["trained_tokens"] += round(summary["stats"]["trained_tokens"] * epochs)
        path = init / "train_summary.json"
    return out


def collect(workdir: Path, students: list[str]) -> dict[str, dict]:
    """``{student: {split: summary}}`` from the evaluation reports, plus ``overall`` over all records
    and the student's ``budget``."""

    layout = Layout(Path(workdir))
    out = {}
    for name in students:
        report = json.loads((layout.eval_dir(name) / "report.json").read_text(encoding="utf-8"))
        records = [r.to_dict() for _, r in read_agent_records(layout.eval_dir(name) / RECORDS)]
        out[name] = {**report["benchmarks"], OVERALL: summarize(records), BUDGET: budget(layout.model(name))}
    return out


def _acc(summary: dict) -> str:
    lo, hi = summary["accuracy_ci95"]
    return f"{100 * summary['accuracy']:.1f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def table_markdown(results: dict[str, dict]) -> str:
    head = ["Student", *(f"{label} acc % [95% CI]" for _, label in COLUMNS),
            "tool use % (tool / text / mixed)", "switch %", *BUDGET_HEAD]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, by_split in results.items():
        splits = [by_split[s] for s, _ in SPLITS]
        tool_use = " / ".join(f"{100 * s['tool_use_rate']:.0f}" for s in splits)
        switch = by_split[OVERALL]["strategy_switch_rate"]
        cells = [ROW_NAMES.get(name, name), *(_acc(by_split[s]) for s, _ in COLUMNS), tool_use,
                 f"{100 * switch:.1f}", *budget_cells(by_split.get(BUDGET))]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


BUDGET_HEAD = ("starts from", "optimizer steps", "example passes", "trained tokens (M)")


def budget_cells(b: dict | None) -> list[str]:
    if not b:
        return ["—"] * len(BUDGET_HEAD)
    return [
        b["start"] or "—",
        f"{b['steps']:,}",
        f"{b['example_passes']:,}",
        f"{b['trained_tokens'] / 1e6:.2f}",
    ]


def plot(results: dict[str, dict], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for metric, title, fname in (
        ("accuracy", "Accuracy by test split", "accuracy.png"),
        ("tool_use_rate", "Tool-use rate by test split", "tool_use.png"),
    ):
        fig, ax = plt.subplots(figsize=(9, 4))
        width = 0.8 / max(len(results), 1)
        for i, (name, by_split) in enumerate(results.items()):
            xs = [j + i * width for j in range(len(COLUMNS))]
            ys = [100 * by_split[s][metric] for s, _ in COLUMNS]
            ax.bar(xs, ys, width, label=ROW_NAMES.get(name, name).split(" (")[0])
            tops = ys
            if metric == "accuracy":
                lo = [100 * (by_split[s]["accuracy"] - by_split[s]["accuracy_ci95"][0]) for s, _ in COLUMNS]
                hi = [100 * (by_split[s]["accuracy_ci95"][1] - by_split[s]["accuracy"]) for s, _ in COLUMNS]
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt="none", ecolor="black", capsize=2, lw=0.8)
                tops = [y + h for y, h in zip(ys, hi, strict=True)]
            for x, y, top in zip(xs, ys, tops, strict=True):  # above the error bar, never on it
                ax.text(x, top + 1.5, f"{y:.0f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks([j + width * (len(results) - 1) / 2 for j in range(len(COLUMNS))])
        ax.set_xticklabels([label for _, label in COLUMNS])
        ax.set_ylabel("%")
        ax.set_ylim(0, 112)
        ax.set_title(title)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
        fig.tight_layout()
        path = out_dir / fname
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def write_results(recipe: Recipe, workdir: Path, timings: dict[str, float]) -> str:
    """Write report.md, results.json and the plots; return the markdown table."""
    results = collect(workdir, student_names(recipe))
    table = table_markdown(results)
    plot(results, workdir)
    manifest = json.loads((workdir / "manifest.json").read_text(encoding="utf-8"))
    seconds = {k: v["seconds"] for k, v in manifest["stages"].items()}
    (workdir / "results.json").write_text(
        json.dumps({"recipe": recipe.name, "seed": recipe.sft.seed, "results": results,
                    "stage_seconds": seconds}, indent=2), encoding="utf-8")  # fmt: skip
    md = [
        f"# DualDistill demo: {recipe.name} (seed {recipe.sft.seed}, world seed {recipe.world.seed})",
        "",
        table,
        "",
        "Accuracy is greedy, one sample per problem, on the synthetic test split of each group; "
        "overall is the whole test split.",
        "",
        "![accuracy](accuracy.png)",
        "![tool use](tool_use.png)",
        "",
        "## Stage times (s)",
        "",
        *(f"- {k}: {v:.1f}" for k, v in seconds.items()),
    ]
    (workdir / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    return table


def demo(*, quick: bool = False, workdir: str | Path | None = None, seed: int = 0,
         overrides: list[str] = (), log=print, runner: Runner | None = None) -> str:  # fmt: skip
    name = "embedded_quick" if quick else "embedded"
    recipe = load_recipe(name, [*seed_overrides(seed), *overrides])
    workdir = Path(workdir or f"runs/demo{'-quick' if quick else ''}-seed{seed}")
    timings = run(recipe, workdir, log=log, runner=runner)
    return write_results(recipe, workdir, timings)


# ----------------------------------------------------------------------------- several seeds
def seed_workdir(workdir: str | Path | None, seed: int, quick: bool) -> Path:
    """Where the demo of ``seed`` runs: ``WORKDIR-seedN`` under several seeds, default runs/demo[-quick]-seedN."""
    return Path(f"{workdir}-seed{seed}" if workdir else f"runs/demo{'-quick' if quick else ''}-seed{seed}")


def accuracies(run: dict) -> dict[str, dict[str, float]]:
    """``{student: {split or overall: accuracy in points}}`` of one run's ``results.json``."""
    return {n: {s: 100 * r[s]["accuracy"] for s, _ in COLUMNS} for n, r in run["results"].items()}


# The comparisons the demo reports seed by seed, as (a, b): a - b, and what each asks.
COMPARISONS = (
    ("dualdistill", "code_only", "DualDistill against the code-only student (unequal budgets)"),
    ("dualdistill", "code_from_text", "DualDistill against the single strategy at its start and steps"),
    ("union", "dualdistill", "both strategies' data, uncomposed, against composition"),
    ("dualdistill_paper", "dualdistill", "the paper's right-right order against ours"),
    ("dualdistill_more", "dualdistill", "more training alone"),
    ("dualdistill_sd", "dualdistill", "self-distillation"),
    ("dualdistill_sd", "dualdistill_more", "self-distillation against as much more training"),
    ("dualdistill_sd_text", "dualdistill", "the paper's self-distillation rule"),
)


def comparisons(runs: list[dict]) -> list[tuple[str, str, str, Paired]]:
    """Overall accuracy, ``a - b`` seed by seed, for every comparison whose students all runs have."""
    accs = [accuracies(r) for r in runs]
    out = []
    for a, b, what in COMPARISONS:
        if all(a in x and b in x for x in accs):
            out.append((a, b, what, paired([x[a][OVERALL] for x in accs], [x[b][OVERALL] for x in accs])))
    return out


def targets(runs: list[dict]) -> list[tuple[str, bool, str]]:
    """The demo's expected shape (issue 32), as ``(target, met, the numbers)``: on the mean over the runs,
    and at every seed. A target whose students a run lacks is left out."""
    accs = [accuracies(r) for r in runs]
    have = set.intersection(*(set(a) for a in accs))
    mean = {n: {s: statistics.mean(a[n][s] for a in accs) for s, _ in COLUMNS} for n in have}
    out: list[tuple[str, bool, str]] = []

    def gap(a: str, b: str, margin: float, every: str = ">") -> None:
        if a not in have or b not in have:
            return
        m = mean[a][OVERALL] - mean[b][OVERALL]
        out.append(
            (
                f"mean: {a} >= {b} + {margin:g}",
                m >= margin,
                f"{mean[a][OVERALL]:.1f} vs {mean[b][OVERALL]:.1f}",
            )
        )
        ok = [x[a][OVERALL] > x[b][OVERALL] if every == ">" else x[a][OVERALL] >= x[b][OVERALL] for x in accs]
        out.append((f"every seed: {a} {every} {b}", all(ok),
                    ", ".join(f"{x[a][OVERALL]:.1f} vs {x[b][OVERALL]:.1f}" for x in accs)))  # fmt: skip

    gap("dualdistill", "code_from_text", 3)
    gap("dualdistill", "code_only", 5)
    gap("dualdistill_sd", "dualdistill", 2, every=">=")
    gap("dualdistill_sd", "dualdistill_more", 0, every=">=")
    if "text_only" in have:
        v = mean["text_only"]["test_text"]
        out.append(("mean: text-only >= 60 on text-favoured", v >= 60, f"{v:.1f}"))
    if "code_only" in have:
        v = mean["code_only"]["test_tool"]
        out.append(("mean: code-only >= 80 on tool-favoured", v >= 80, f"{v:.1f}"))
    tool = [{s: 100 * r["results"]["dualdistill"][s]["tool_use_rate"] for s, _ in SPLITS} for r in runs]
    out.append(("every seed: DualDistill tool use >= 90 tool / <= 15 text",
                all(t["test_tool"] >= 90 and t["test_text"] <= 15 for t in tool),
                ", ".join(f"{t['test_tool']:.0f}/{t['test_text']:.0f}" for t in tool)))  # fmt: skip
    return out


def mean_budget(budgets: list[dict | None]) -> dict | None:
    """The mean of each count over runs (None when a run has no budget: one made before budgets)."""
    if not budgets or any(b is None for b in budgets):
        return None
    keys = ("steps", "example_passes", "trained_tokens")
    return {"start": budgets[0]["start"], **{k: round(statistics.mean(b[k] for b in budgets)) for k in keys}}


def spread(workdirs: list[str | Path]) -> str:
    """Mean ± standard deviation of each table cell over several runs' ``results.json``, each run's row,
    and the targets, as markdown."""
    runs = [json.loads((Path(w) / "results.json").read_text(encoding="utf-8")) for w in workdirs]
    accs = [accuracies(r) for r in runs]
    head = ["Student", *(f"{label} acc %" for _, label in COLUMNS), "tool use % (tool / text / mixed)",
            *BUDGET_HEAD]  # fmt: skip
    lines = [f"Seeds {[r['seed'] for r in runs]}: mean ± sample standard deviation over {len(runs)} runs "
             "(budgets: the mean over the runs)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for name in runs[0]["results"]:
        cells = [ROW_NAMES.get(name, name)]
        for split, _ in COLUMNS:
            vals = [a[name][split] for a in accs]
            cells.append(f"{statistics.mean(vals):.1f} ± {sample_sd(vals):.1f}")
        tool = [
            statistics.mean(100 * r["results"][name][s]["tool_use_rate"] for r in runs) for s, _ in SPLITS
        ]
        cells.append(" / ".join(f"{t:.0f}" for t in tool))
        cells += budget_cells(mean_budget([r["results"][name].get(BUDGET) for r in runs]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Per seed (tool-favoured / text-favoured / mixed / overall accuracy %):", ""]
    for r, a in zip(runs, accs, strict=True):
        parts = [f"{n} " + "/".join(f"{a[n][s]:.1f}" for s, _ in COLUMNS) for n in a]
        minutes = sum(r["stage_seconds"].values()) / 60
        lines.append(f"- seed {r['seed']}: " + "; ".join(parts) + f" (stages {minutes:.1f} min)")
    pairs = comparisons(runs)
    if pairs:
        lines += ["", "Paired differences in overall accuracy (points; a − b per seed; mean, 95% t-interval):",
                  "", "| a − b | what it asks | per seed | mean [95% CI], seeds > 0 |", "|---|---|---|---|"]  # fmt: skip
        for a, b, what, p in pairs:
            per = ", ".join(f"{d:+.1f}" for d in p.diffs)
            lines.append(f"| {a} − {b} | {what} | {per} | {p.describe()} |")
    lines += ["", "Targets:", ""]
    lines += [f"- {name}: {'met' if ok else 'MISSED'} ({numbers})" for name, ok, numbers in targets(runs)]
    return "\n".join(lines)
