"""JSONL records: append and flush, torn-tail repair on resume, strict reading, done keys."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dualdistill.core.records import DataError, JsonlAppender, done_keys, read_jsonl, write_jsonl


def test_append_then_read(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.jsonl"
    with JsonlAppender(path) as out:
        out.write({"id": 1, "text": "é"})
        out.write({"id": 2})
        # flushed per record: another reader sees both lines before close
        assert len(path.read_text(encoding="utf-8").splitlines()) == 2
    assert [r for _, r in read_jsonl(path)] == [{"id": 1, "text": "é"}, {"id": 2}]


def test_torn_tail_is_cut_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": 1}\n{"id": 2}\n{"id": 3, "te')  # a kill mid-write
    assert done_keys(path, lambda r: r["id"]) == {1, 2}  # the torn line is not a record
    with pytest.raises(DataError, match=r"r.jsonl:3: malformed JSON"):
        list(read_jsonl(path))  # strict reading names the torn line
    with JsonlAppender(path) as out:
        out.write({"id": 3})
    assert path.read_text() == '{"id": 1}\n{"id": 2}\n{"id": 3}\n'


def test_torn_only_line_and_intact_files(tmp_path: Path) -> None:
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"id": ')
    JsonlAppender(torn).close()
    assert torn.read_text() == ""
    intact = tmp_path / "intact.jsonl"
    intact.write_text('{"id": 1}\n')
    JsonlAppender(intact).close()
    assert intact.read_text() == '{"id": 1}\n'


def test_resume_after_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "job.jsonl"
    code = (
        "import sys, time\n"
        "from dualdistill.core.records import JsonlAppender, done_keys\n"
        "path = sys.argv[1]\n"
        "done = done_keys(path, lambda r: r['i'])\n"
        "with JsonlAppender(path) as out:\n"
        "    for i in range(200):\n"
        "        if i not in done:\n"
        "            out.write({'i': i, 'pad': 'x' * 50})\n"
        "            time.sleep(0.01)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)])
    deadline = time.monotonic() + 60
    while (not path.exists() or path.stat().st_size < 500) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with path.open("a") as f:
        f.write('{"i": 999, "pa')  # simulate the kill tearing the record being written
    first = done_keys(path, lambda r: r["i"])
    assert 0 < len(first) < 200 and 999 not in first
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=120)
    ids = [r["i"] for _, r in read_jsonl(path)]
    assert ids == list(range(200))  # nothing lost, nothing duplicated, in order


def test_read_errors_name_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        list(read_jsonl(tmp_path / "absent.jsonl"))
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n\n[1, 2]\n')
    with pytest.raises(DataError, match=r"bad.jsonl:3: expected a JSON object, got list") as info:
        list(read_jsonl(path))
    assert info.value.line == 3 and info.value.path.endswith("bad.jsonl")
    path.write_text('{"a": 1}\n{broken}\n{"a": 2}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
        list(read_jsonl(path, allow_torn_tail=True))  # only a final line without newline is forgiven


def test_done_keys_missing_file(tmp_path: Path) -> None:
    assert done_keys(tmp_path / "none.jsonl", lambda r: r["id"]) == set()


def test_write_jsonl_is_whole(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    write_jsonl(path, [{"a": 1}, {"a": 2}])
    write_jsonl(path, [{"a": 3}])
    assert [json.loads(x) for x in path.read_text().splitlines()] == [{"a": 3}]
    assert not (tmp_path / "w.jsonl.tmp").exists()
