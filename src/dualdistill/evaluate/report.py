"""The eval report: ``report.json`` and ``report.md`` (accuracy with its 95% interval, pass@k, maj@k, tool
use and switch rates, tokens, per benchmark), the accuracy plot, and TensorBoard scalars.

Guarantees: the files describe exactly the summaries given; a rerun rewrites them (the report is derived
from the records, never the other way round).
The plot is drawn with matplotlib's Agg backend: no display is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

from dualdistill.core.records import provenance


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
