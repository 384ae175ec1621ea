"""Sharded jobs: --shard I/N splits teach, eval and self-distill sample by problem id; merge joins them into
what one run writes, and refuses shards that do not belong together."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dualdistill.cli.interop import merge_shards as merge
from dualdistill.core.records import DataError
from dualdistill.core.shards import Shard, in_shard, take
from dualdistill.format.problems import Problem
from fake_openai_server import FakeOpenAIServer, Outcome

CLI = [sys.executable, "-c", "from dualdistill.cli import main; main()"]


def run_cli(*args) -> subprocess.CompletedProcess:
    r = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def sorted_lines(path: Path, key: str) -> list[str]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [json.dumps(r, sort_keys=True) for r in sorted(rows, key=lambda r: str(r[key]))]


def test_shards_partition_by_id_alone():
    problems = [Problem(f"p{i}", "q", "1") for i in range(300)]
    parts = [take(problems, f"{i}/3") for i in range(3)]
    assert sorted(p.id for part in parts for p in part) == sorted(p.id for p in problems)
    assert all(60 < len(part) < 140 for part in parts)
    # The same id lands in the same shard whatever else is in the set, and in whatever order.
    assert in_shard("p7", Shard.parse("1/3")) == ("p7" in {p.id for p in parts[1]})
    assert [p.id for p in take(list(reversed(problems)), "1/3")] == [p.id for p in reversed(parts[1])]
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            Shard.parse(bad)


TEACH = ["teach", "--problems", "synthetic", "--synthetic-n", "60", "--no-progress",
         "--set", "code_teacher.generation.executor_timeout_s=0.2",
         "--set", "code_teacher.generation.executor_limit=cpu", "--set", "concurrency=4"]  # fmt: skip


@pytest.fixture(scope="module")
def teach_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("teach-shards")
    run_cli(*TEACH, "--out", root / "one")
    for i in range(3):
        run_cli(*TEACH, "--shard", f"{i}/3", "--out", root / f"s{i}")
    return root


def test_teach_in_three_shards_merges_into_the_one_run(teach_runs, tmp_path):
    root = teach_runs
    run_cli("merge", *(root / f"s{i}" for i in range(3)), "--out", tmp_path / "merged")
    assert sorted_lines(tmp_path / "merged" / "pairs.jsonl", "id") == sorted_lines(
        root / "one" / "pairs.jsonl", "id"
    )
    # in the problem set's order, as one run writes it
    ids = [json.loads(line)["id"] for line in (tmp_path / "merged" / "pairs.jsonl").read_text().splitlines()]
    one = [json.loads(line)["id"] for line in (root / "one" / "pairs.jsonl").read_text().splitlines()]
    assert ids == one


def test_merge_refuses_what_does_not_belong_together(teach_runs, tmp_path):
    root = teach_runs
    with pytest.raises(DataError, match=r"shard 2/3 is missing"):
        merge([root / "s0", root / "s1"], tmp_path / "a")
    with pytest.raises(DataError, match=r"shard 1/3 is given twice"):
        merge([root / "s0", root / "s1", root / "s1"], tmp_path / "b")
    # a shard made with other settings: its identity names another first-teacher seed
    other = tmp_path / "s2-other"
    shutil.copytree(root / "s2", other)
    ident = other / ".teach-identity.json"
    data = json.loads(ident.read_text())
    data["first_teacher_seed"] = 7
    ident.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"s2-other.*key 'first_teacher_seed' differs"):
        merge([root / "s0", root / "s1", other], tmp_path / "c")
    # a record in two shards
    dup = tmp_path / "s2-dup"
    shutil.copytree(root / "s2", dup)
    with (dup / "pairs.jsonl").open("a") as f:
        f.write((root / "s0" / "pairs.jsonl").read_text().splitlines()[0] + "\n")
    with pytest.raises(DataError, match=r"record .* is also in"):
        merge([root / "s0", root / "s1", dup], tmp_path / "d")
    assert not (tmp_path / "c").exists() and not (tmp_path / "d" / "pairs.jsonl").exists()


def test_eval_in_three_shards_merges_into_the_one_run(tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)})
                             + "\n" for i in range(24)))  # fmt: skip

    def answer(body):  # deterministic: the same prompt always gets the same answer
        n = int(body["prompt"].split("What is ")[1].split(" ")[0])
        return Outcome(text=f"<answer>\\boxed{{{n + 1 if n % 3 else n}}}</answer>", stop_reason="</answer>")

    with FakeOpenAIServer(answer) as srv:
        common = ["eval", "--model", srv.url, "--bench", bench, "--no-tools", "--template", "compact",
                  "--no-progress"]  # fmt: skip
        run_cli(*common, "--out", tmp_path / "one")
        for i in range(3):
            run_cli(*common, "--shard", f"{i}/3", "--out", tmp_path / f"s{i}")
    run_cli("merge", *(tmp_path / f"s{i}" for i in range(3)), "--out", tmp_path / "merged")

    def records(d):
        rows = [json.loads(x) for x in (d / "records.jsonl").read_text().splitlines()]
        keep = ("problem_id", "sample_index", "response", "correct", "extracted", "gold")
        return sorted((tuple(r[k] for k in keep) for r in rows), key=str)

    assert records(tmp_path / "merged") == records(tmp_path / "one") and len(records(tmp_path / "one")) == 24
    merged = json.loads((tmp_path / "merged" / "report.json").read_text())["benchmarks"]
    one = json.loads((tmp_path / "one" / "report.json").read_text())["benchmarks"]
    assert merged["bench"]["accuracy"] == one["bench"]["accuracy"] == 16 / 24
    # A shard whose last record was cut by a kill is refused, naming it; --allow-incomplete merges and says so.
    torn = tmp_path / "s1-torn"
    shutil.copytree(tmp_path / "s1", torn)
    lines = (torn / "records.jsonl").read_text().splitlines(keepends=True)
    (torn / "records.jsonl").write_text("".join(lines[:-1]) + lines[-1][:20])
    shards = [tmp_path / "s0", torn, tmp_path / "s2"]
    with pytest.raises(DataError, match=r"s1-torn: 1 records missing"):
        merge(shards, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    merge(shards, tmp_path / "partial", allow_incomplete=True)
    assert len(json.loads((tmp_path / "partial" / "merge.json").read_text())["missing"]) == 1
    # Shards served by different replicas under one served model name are one job (eval resumes so too);
    # without a name the address is all that names the model, so it must agree.
    import re as _re

    replicas = []
    for i in range(3):
        d = tmp_path / f"replica{i}"
        shutil.copytree(tmp_path / f"s{i}", d)
        cfg = (d / "config.yaml").read_text()
        (d / "config.yaml").write_text(
            _re.sub(r"http://127\.0\.0\.1:\d+(/v1)?", f"http://127.0.0.{i + 1}:80/v1#m", cfg)
        )
        replicas.append(d)
    merge(replicas, tmp_path / "replicas")
    (replicas[2] / "config.yaml").write_text((replicas[2] / "config.yaml").read_text().replace("#m", ""))
    with pytest.raises(DataError, match=r"key 'backend\.model' differs"):
        merge(replicas, tmp_path / "unnamed")
    # --out may not be an input; a damaged marker is named
    with pytest.raises(DataError, match="input shard"):
        merge([tmp_path / f"s{i}" for i in range(3)], tmp_path / "s0")
    (torn / "shard.json").write_text('{"shard": "1/3"}')
    with pytest.raises(DataError, match=r"shard.json: damaged shard marker"):
        merge(shards, tmp_path / "damaged")


SHARDED = {
    "eval": ["eval", "--model", "MODEL", "--bench", "math500"],
    "sample": ["self-distill", "sample", "--model", "MODEL", "--problems", "math500"],
    "teach": ["teach", "--problems", "synthetic"],
}


@pytest.mark.parametrize("command", list(SHARDED))
@pytest.mark.parametrize("bad", ["0/0", "3/2", "a/b"])
def test_a_bad_shard_is_one_clear_line_and_nothing_is_written(command, bad, tmp_path):
    argv = [str(tmp_path) if a == "MODEL" else a for a in SHARDED[command]]
    r = subprocess.run([*CLI, *argv, "--shard", bad, "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-1000:]
    assert "shard" in r.stderr and bad in r.stderr
    assert not (tmp_path / "out").exists()
