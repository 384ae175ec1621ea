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
