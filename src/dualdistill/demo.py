"""``dualdistill demo``: the embedded recipe end to end, then the paper-style table and plots.

The table has one row per student (text-only, code-only, DualDistill, DualDistill + self-distillation)
and one column per test split of the synthetic world (tool-favoured, text-favoured, mixed: accuracy
with a 95% interval), then the whole test split ("overall", the analogue of a benchmark that needs
both strategies), the tool-use rate per split and the strategy-switch rate.

Guarantees: every number in the table is read from what the run wrote: the per-split summaries from
``eval/<student>/report.json``, and the overall one by ``evaluate.summarize`` over the same records
(``eval/<student>/records.jsonl``); nothing is typed in. ``report.md``, ``results.json`` and two PNG
plots are written into the work directory.
Not guaranteed: the *shape* of the result. The demo prints what the run measured, whatever it is.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from dualdistill.pipeline import Layout, Recipe, load_recipe, run, seed_overrides, student_names

ROW_NAMES = {
    "text_only": "Text-only student (≈ DeepSeek-R1-Distill)",
    "code_only": "Code-only student (≈ tool-using instruct model)",
    "dualdistill": "DualDistill student (≈ Agentic-R1)",
    "dualdistill_sd": "DualDistill + self-distillation (≈ Agentic-R1-SD)",
    "dualdistill_sd_text": "DualDistill + self-distillation, paper repair (text teacher only)",
}
SPLITS = (("test_tool", "tool-favoured"), ("test_text", "text-favoured"), ("test_mixed", "mixed"))


OVERALL = "overall"
COLUMNS = (*SPLITS, (OVERALL, "overall"))


def collect(workdir: Path, students: list[str]) -> dict[str, dict]:
    """``{student: {split: summary}}`` from the evaluation reports, plus ``overall`` over all records."""
    from dualdistill.agent import read_agent_records
    from dualdistill.evaluate import RECORDS, summarize

    layout = Layout(Path(workdir))
    out = {}
    for name in students:
        report = json.loads((layout.eval_dir(name) / "report.json").read_text(encoding="utf-8"))
        records = [r.to_dict() for _, r in read_agent_records(layout.eval_dir(name) / RECORDS)]
        out[name] = {**report["benchmarks"], OVERALL: summarize(records)}
    return out


def _acc(summary: dict) -> str:
    lo, hi = summary["accuracy_ci95"]
    return f"{100 * summary['accuracy']:.1f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def table_markdown(results: dict[str, dict]) -> str:
    head = ["Student", *(f"{label} acc % [95% CI]" for _, label in COLUMNS),
            "tool use % (tool / text / mixed)", "switch %"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, by_split in results.items():
        splits = [by_split[s] for s, _ in SPLITS]
        tool_use = " / ".join(f"{100 * s['tool_use_rate']:.0f}" for s in splits)
        switch = by_split[OVERALL]["strategy_switch_rate"]
        cells = [ROW_NAMES.get(name, name), *(_acc(by_split[s]) for s, _ in COLUMNS), tool_use,
                 f"{100 * switch:.1f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
         overrides: list[str] = (), log=print) -> str:  # fmt: skip
    name = "embedded_quick" if quick else "embedded"
    recipe = load_recipe(name, [*seed_overrides(seed), *overrides])
    workdir = Path(workdir or f"runs/demo{'-quick' if quick else ''}-seed{seed}")
    timings = run(recipe, workdir, log=log)
    return write_results(recipe, workdir, timings)


# ----------------------------------------------------------------------------- several seeds
def seed_workdir(workdir: str | Path | None, seed: int, quick: bool) -> Path:
    """Where the demo of ``seed`` runs: ``WORKDIR-seedN`` under several seeds, default runs/demo[-quick]-seedN."""
    return Path(f"{workdir}-seed{seed}" if workdir else f"runs/demo{'-quick' if quick else ''}-seed{seed}")


def accuracies(run: dict) -> dict[str, dict[str, float]]:
    """``{student: {split or overall: accuracy in points}}`` of one run's ``results.json``."""
    return {n: {s: 100 * r[s]["accuracy"] for s, _ in COLUMNS} for n, r in run["results"].items()}


def targets(runs: list[dict]) -> list[tuple[str, bool, str]]:
    """The demo's expected shape (issue 25), as ``(target, met, the numbers)``: on the mean over the runs,
    and at every seed."""
    accs = [accuracies(r) for r in runs]
    mean = {n: {s: statistics.mean(a[n][s] for a in accs) for s, _ in COLUMNS} for n in accs[0]}

    def best_single(a):
        return max(a["text_only"][OVERALL], a["code_only"][OVERALL])

    dual, sd, best = (
        mean["dualdistill"][OVERALL],
        mean.get("dualdistill_sd", {}).get(OVERALL),
        best_single(mean),
    )
    tool = [{s: 100 * r["results"]["dualdistill"][s]["tool_use_rate"] for s, _ in SPLITS} for r in runs]
    out = [
        ("mean: DualDistill >= best single + 5", dual >= best + 5, f"{dual:.1f} vs {best:.1f}"),
        ("every seed: DualDistill > best single",
         all(a["dualdistill"][OVERALL] > best_single(a) for a in accs),
         ", ".join(f"{a['dualdistill'][OVERALL]:.1f} vs {best_single(a):.1f}" for a in accs)),
        ("mean: text-only >= 60 on text-favoured", mean["text_only"]["test_text"] >= 60,
         f"{mean['text_only']['test_text']:.1f}"),
        ("mean: code-only >= 80 on tool-favoured", mean["code_only"]["test_tool"] >= 80,
         f"{mean['code_only']['test_tool']:.1f}"),
        ("every seed: DualDistill tool use >= 90 tool / <= 15 text",
         all(t["test_tool"] >= 90 and t["test_text"] <= 15 for t in tool),
         ", ".join(f"{t['test_tool']:.0f}/{t['test_text']:.0f}" for t in tool)),
    ]  # fmt: skip
    if sd is not None:
        out[1:1] = [("mean: SD >= DualDistill", sd >= dual, f"{sd:.1f} vs {dual:.1f}"),
                    ("mean: SD >= best single + 5", sd >= best + 5, f"{sd:.1f} vs {best:.1f}")]  # fmt: skip
    return out


def spread(workdirs: list[str | Path]) -> str:
    """Mean ± standard deviation of each table cell over several runs' ``results.json``, each run's row,
    and the targets, as markdown."""
    runs = [json.loads((Path(w) / "results.json").read_text(encoding="utf-8")) for w in workdirs]
    accs = [accuracies(r) for r in runs]
    head = ["Student", *(f"{label} acc %" for _, label in COLUMNS), "tool use % (tool / text / mixed)"]
    lines = [f"Seeds {[r['seed'] for r in runs]}: mean ± standard deviation over {len(runs)} runs", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for name in runs[0]["results"]:
        cells = [ROW_NAMES.get(name, name)]
        for split, _ in COLUMNS:
            vals = [a[name][split] for a in accs]
            cells.append(f"{statistics.mean(vals):.1f} ± {statistics.pstdev(vals):.1f}")
        tool = [
            statistics.mean(100 * r["results"][name][s]["tool_use_rate"] for r in runs) for s, _ in SPLITS
        ]
        cells.append(" / ".join(f"{t:.0f}" for t in tool))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Per seed (tool-favoured / text-favoured / mixed / overall accuracy %):", ""]
    for r, a in zip(runs, accs, strict=True):
        parts = [f"{n} " + "/".join(f"{a[n][s]:.1f}" for s, _ in COLUMNS) for n in a]
        minutes = sum(r["stage_seconds"].values()) / 60
        lines.append(f"- seed {r['seed']}: " + "; ".join(parts) + f" (stages {minutes:.1f} min)")
    lines += ["", "Targets:", ""]
    lines += [f"- {name}: {'met' if ok else 'MISSED'} ({numbers})" for name, ok, numbers in targets(runs)]
    return "\n".join(lines)
