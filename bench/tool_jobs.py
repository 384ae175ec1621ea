"""Whole-job wall time of tool-integrated generation: ``dualdistill eval`` and ``self-distill sample``
(K from the run's config, 4 in the embedded recipe) on the embedded test split, with a demo student.

    python bench/tool_jobs.py --workdir runs/demo-seed0                       # this checkout
    python bench/tool_jobs.py --workdir runs/demo-seed0 --baseline-src /tmp/old/src   # against another

Each job runs as the real command in a fresh process, on the run's own config files
(``configs/eval.yaml``, ``configs/sd-sample.yaml``) and student (``models/STUDENT/model``). With
``--baseline-src`` (the ``src`` directory of another checkout, e.g. a ``git worktree`` of an older
commit that reads the same config files) each job also runs on that code, interleaved, in the same run,
and ``eval_records_identical`` says whether both wrote the same greedy evaluation records. The last
line is one JSON object; ``*_vs_baseline`` is baseline seconds / these seconds (above 1: faster now).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def command(job: str, workdir: Path, student: str, out: Path) -> list[str]:
    model = workdir / "models" / student / "model"
    if job == "eval":
        return [sys.executable, "-m", "dualdistill.cli", "eval", "--config", str(workdir / "configs" / "eval.yaml"),
                "--model", str(model), "--out", str(out), "--no-progress"]  # fmt: skip
    return [sys.executable, "-m", "dualdistill.cli", "self-distill", "sample", "--config",
            str(workdir / "configs" / "sd-sample.yaml"), "--model", str(model),
            "--problems", str(workdir / "world" / "test.jsonl"), "--out", str(out), "--no-progress"]  # fmt: skip


def timed(cmd: list[str], src: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return seconds


def responses(path: Path) -> dict:
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {(r["source"], r["problem_id"], r["sample_index"]): r["response"] for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True, help="a finished `dualdistill demo` run")
    ap.add_argument("--student", default="dualdistill")
    ap.add_argument("--baseline-src", type=Path, help="another checkout's src directory to compare with")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    trees = {"current": SRC, **({"baseline": args.baseline_src.resolve()} if args.baseline_src else {})}
    seconds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            order = list(trees) if r % 2 == 0 else list(reversed(trees))
            for job in ("eval", "sample"):
                for tree in order:
                    out = Path(tmp) / f"{tree}-{job}-{r}"
                    cmd = command(job, args.workdir, args.student, out)
                    seconds.setdefault(f"{tree}_{job}", []).append(timed(cmd, trees[tree]))
        result = {"workdir": str(args.workdir), "student": args.student, "repeats": args.repeats}
        result |= {f"{k}_s": round(statistics.median(v), 2) for k, v in seconds.items()}
        if args.baseline_src:
            for job in ("eval", "sample"):
                result[f"{job}_vs_baseline"] = round(
                    statistics.median(seconds[f"baseline_{job}"])
                    / statistics.median(seconds[f"current_{job}"]),
                    3,
                )
            a, b = (responses(Path(tmp) / f"{t}-eval-0" / "records.jsonl") for t in ("current", "baseline"))
            result["eval_records_identical"] = a == b
    print(json.dumps(result))


if __name__ == "__main__":
    main()
