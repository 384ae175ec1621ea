"""The pretrained tiny base: a generic corpus that never states the world's tasks, and shipped weights that
match their manifest."""

from __future__ import annotations

import ast
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dualdistill.base import corpus as base_corpus
from dualdistill.base.corpus import pretrain_corpus
from dualdistill.base.pretrain import (
    MANIFEST,
    WEIGHTS,
    PretrainConfig,
    check_manifest,
    sha256_of,
    shipped_base,
)
from dualdistill.core.config import to_dict
from dualdistill.synthetic import families

SHIPPED_N = PretrainConfig().corpus_n


@pytest.fixture(scope="module")
def shipped_corpus_text() -> str:
    return "\n\x00\n".join(pretrain_corpus(SHIPPED_N, PretrainConfig().corpus_seed))


def _phrasing_regex(phrasing: str) -> re.Pattern:
    """A world phrasing with each ``{placeholder}`` as any run of characters on one line."""
    parts = re.split(r"\{[^}]+\}", phrasing)
    return re.compile("[^\n]+?".join(re.escape(p) for p in parts))


def test_corpus_is_deterministic_and_has_every_kind():
    a, b = pretrain_corpus(300, seed=3), pretrain_corpus(300, seed=3)
    assert a == b
    assert a != pretrain_corpus(300, seed=4)
    text = "\n".join(a)
    assert "<code>" in text and "<executor>" in text and "<think>" in text and "\\boxed{" in text
    assert " again: " in text and " mod " in text


def test_corpus_module_imports_nothing_of_the_world():
    tree = ast.parse(Path(base_corpus.__file__).read_text(encoding="utf-8"))
    imported = [
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in (n.names if isinstance(n, ast.Import) else [n])
    ]
    assert imported, "the check found no import statements at all"
    assert not [m for m in imported if m and "synthetic" in m], imported


@pytest.mark.parametrize("phrasing", [*families.MUL_PHRASES, *families.POW_PHRASES, *families.COUNT_PHRASES])
def test_no_world_phrasing_occurs_in_the_shipped_corpus(phrasing, shipped_corpus_text):
    # The regex matches any filling of the placeholders, so no question of any world seed can occur.
    pattern = _phrasing_regex(phrasing)
    assert pattern.search(phrasing.format(a=12, b=3, expr="7^2", m=5, N=1000, s=4))  # the check can fire
    match = pattern.search(shipped_corpus_text)
    assert match is None, f"world phrasing {phrasing!r} occurs: {match.group(0)!r}"


def test_no_test_question_of_world_seeds_0_to_9_occurs(shipped_corpus_text):
    questions = set()
    for seed in range(10):
        _, test = families.make_splits(2000, seed, 0.2)
        questions.update(p.question for p in test)
    assert len(questions) > 3000
    hits = [q for q in questions if q in shipped_corpus_text]
    assert not hits, hits[:3]


def test_shipped_base_matches_its_manifest():
    base = shipped_base()
    assert check_manifest(base) == []
    manifest = json.loads((base / MANIFEST).read_text())
    assert manifest["sha256"][WEIGHTS] == sha256_of(base / WEIGHTS)
    assert manifest["config"] == to_dict(PretrainConfig()), "the defaults no longer reproduce the base"
    assert manifest["command"].startswith("dualdistill base pretrain --out ")
    assert manifest["corpus"]["documents"] == SHIPPED_N and manifest["corpus"]["seed"] == 0
    assert manifest["steps"] == PretrainConfig().steps
    assert 0 < manifest["final_loss"] < 3
    assert (base / WEIGHTS).stat().st_size <= 20 * 2**20


def test_check_manifest_notices_changed_weights(tmp_path):
    import shutil

    copy = tmp_path / "base"
    shutil.copytree(shipped_base(), copy)
    assert check_manifest(copy) == []
    with open(copy / WEIGHTS, "r+b") as f:
        f.seek(-4, 2)
        tail = f.read(4)
        f.seek(-4, 2)
        f.write(bytes(b ^ 0xFF for b in tail))
    assert any("sha256 differs" in p for p in check_manifest(copy))
    (copy / MANIFEST).unlink()
    assert check_manifest(copy) == [f"{copy / MANIFEST}: no manifest"]


def _tiny_overrides(steps: int) -> list[str]:
    return [
        "corpus_n=300", "size=tiny", "block_size=64", f"steps={steps}", "save_steps=2", "batch_size=4",
        "warmup=2", "threads=1", "logging_steps=1",
    ]  # fmt: skip


def _pretrain_cli(out: Path, steps: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dualdistill.cli",
        "base",
        "pretrain",
        "--out",
        str(out),
        *_tiny_overrides(steps),
    ]


@pytest.mark.slow
def test_pretrain_is_seeded_and_resumes_after_a_kill(tmp_path):
    """Two runs of one config give identical weights, and a run killed after a checkpoint resumes from it
    to the same weights as an uninterrupted run."""
    steps = 40
    subprocess.run(_pretrain_cli(tmp_path / "a", steps), check=True, capture_output=True)
    manifest = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert manifest["steps"] == steps and manifest["corpus"]["documents"] == 300
    assert check_manifest(tmp_path / "a") == []
    assert not (tmp_path / "a" / "run").exists()

    killed = tmp_path / "b"
    proc = subprocess.Popen(
        _pretrain_cli(killed, steps), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not list((killed / "run").glob("checkpoint-*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / MANIFEST).exists(), "the run finished before the kill; the test needs more steps"
    left = sorted(int(c.name.split("-")[1]) for c in (killed / "run").glob("checkpoint-*"))
    assert left and left[-1] < steps
    subprocess.run(_pretrain_cli(killed, steps), check=True, capture_output=True)
    assert sha256_of(killed / WEIGHTS) == sha256_of(tmp_path / "a" / WEIGHTS)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(killed)
    assert len(tok("<code>", add_special_tokens=False)["input_ids"]) == 1
    assert AutoModelForCausalLM.from_pretrained(killed).config.use_cache is True
