"""Run-to-run spread of the demo over several seeds: mean ± standard deviation of each table cell.

Usage:
    for s in 0 1 2; do dualdistill demo --seed $s; done
    python scripts/demo_spread.py runs/demo-seed0 runs/demo-seed1 runs/demo-seed2
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from dualdistill.demo import COLUMNS, ROW_NAMES, SPLITS


def main(workdirs: list[str]) -> None:
    runs = [json.loads((Path(w) / "results.json").read_text()) for w in workdirs]
    seeds = [r["seed"] for r in runs]
    head = ["Student", *(f"{label} acc %" for _, label in COLUMNS), "tool use % (tool / text / mixed)"]
    print(f"Seeds {seeds}: mean ± standard deviation over {len(runs)} runs\n")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name in runs[0]["results"]:
        cells = [ROW_NAMES.get(name, name)]
        for split, _ in COLUMNS:
            accs = [100 * r["results"][name][split]["accuracy"] for r in runs]
            cells.append(f"{statistics.mean(accs):.1f} ± {statistics.pstdev(accs):.1f}")
        tool = [
            statistics.mean(100 * r["results"][name][s]["tool_use_rate"] for r in runs) for s, _ in SPLITS
        ]
        cells.append(" / ".join(f"{t:.0f}" for t in tool))
        print("| " + " | ".join(cells) + " |")
    print("\nPer seed (tool-favoured / text-favoured / mixed / overall accuracy %):\n")
    for r in runs:
        parts = []
        for name, by_split in r["results"].items():
            accs = "/".join(f"{100 * by_split[s]['accuracy']:.1f}" for s, _ in COLUMNS)
            parts.append(f"{name} {accs}")
        total = sum(r["stage_seconds"].values())
        print(f"- seed {r['seed']}: " + "; ".join(parts) + f" (stages {total / 60:.1f} min)")
    print("\nIssue targets per seed (met / missed):\n")
    for r in runs:
        print(f"- seed {r['seed']}: " + "; ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in targets(r)))


def targets(run: dict) -> list[tuple[str, bool]]:
    """The demo's expected shape, checked on one run's results (accuracies in points)."""
    res = run["results"]
    acc = {n: {s: 100 * res[n][s]["accuracy"] for s, _ in COLUMNS} for n in res}
    best_single = max(acc["text_only"]["overall"], acc["code_only"]["overall"])
    dual = acc["dualdistill"]
    tool_use = {s: 100 * res["dualdistill"][s]["tool_use_rate"] for s, _ in SPLITS}
    within = all(dual[s] >= max(acc["text_only"][s], acc["code_only"][s]) - 10 for s, _ in SPLITS)
    return [
        ("dual overall >= best single + 5", dual["overall"] >= best_single + 5),
        ("SD overall >= dual overall", acc["dualdistill_sd"]["overall"] >= dual["overall"]),
        ("dual tool use >= 90 / <= 15", tool_use["test_tool"] >= 90 and tool_use["test_text"] <= 15),
        ("dual within 10 of the better single on each group", within),
    ]


if __name__ == "__main__":
    main(sys.argv[1:])
