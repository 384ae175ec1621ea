"""Stage bookkeeping for the pipeline: a manifest of configs and content hashes, and skip/re-run rules.

A stage is a named step with input paths, output paths, a config (any JSON-able mapping) and a function
that produces the outputs. ``run_stages`` runs them in order and records each finished stage in
``WORKDIR/manifest.json``.

Guarantees:
- A stage is skipped only when it finished before (recorded in the manifest), its config hash and input
  hashes are unchanged, and its outputs still exist with the hashes recorded then.
- A stage whose config or inputs changed is run again, and so is every stage after it whose inputs then
  change. Such a re-run starts over: the stage's ``state`` paths (default: its outputs) are removed
  first, so records or checkpoints made under the old config are never resumed as if they were current.
- The manifest is written atomically after each stage, so a kill never leaves it half-written. A stage
  killed mid-way is not recorded and runs again; stages are written so that running again resumes
  (append-only records, trainer checkpoints) rather than starting over.

Not guaranteed: detecting changes to files outside the declared inputs (code changes, for instance,
are seen only through the recorded package version).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualdistill import __version__

# Files larger than this are keyed by size and mtime, so a 15 GB checkpoint is not read on every run.
_FULL_HASH_LIMIT = 256 * 1024 * 1024


def hash_path(path: Path) -> str | None:
    """A content hash of a file or a directory tree; ``None`` when it does not exist."""
    path = Path(path)
    if not path.exists():
        return None
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        rel = f.name if f == path else str(f.relative_to(path))
        if rel.endswith(".tmp") or "/checkpoint-" in f"/{rel}":
            continue  # transient training state is not an output
        h.update(rel.encode() + b"\0")
        st = f.stat()
        if st.st_size > _FULL_HASH_LIMIT:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            continue
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def hash_config(config: Any) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Stage:
    name: str
    run: Callable[[], None]
    inputs: list[Path] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    # Where the stage keeps resumable work (appended records, checkpoints); removed when it re-runs.
    # Empty: its outputs.
    state: list[Path] = field(default_factory=list)


class Manifest:
    def __init__(self, workdir: Path):
        self.path = Path(workdir) / "manifest.json"
        self.data: dict[str, Any] = {"version": __version__, "stages": {}}
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{self.path}: corrupt manifest ({e.msg}); delete it to re-run all"
                ) from None

    def entry(self, name: str) -> dict | None:
        return self.data["stages"].get(name)

    def record(self, stage: Stage, inputs: dict, seconds: float) -> None:
        self.data["stages"][stage.name] = {
            "config": stage.config,
            "config_hash": hash_config(stage.config),
            "inputs": inputs,
            "outputs": {str(p): hash_path(p) for p in stage.outputs},
            "seconds": round(seconds, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "dualdistill_version": __version__,
        }
        self.save()

    def forget(self, name: str) -> None:
        if self.data["stages"].pop(name, None) is not None:
            self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)


def why_run(stage: Stage, manifest: Manifest) -> tuple[str | None, dict]:
    """The reason a stage must run (``None`` when it can be skipped), and its current input hashes."""
    inputs = {str(p): hash_path(p) for p in stage.inputs}
    missing = [p for p, h in inputs.items() if h is None]
    if missing:
        raise FileNotFoundError(f"stage '{stage.name}': input {missing[0]} does not exist")
    entry = manifest.entry(stage.name)
    if entry is None:
        return "not run yet", inputs
    if entry.get("config_hash") != hash_config(stage.config):
        return "config changed", inputs
    if entry.get("inputs") != inputs:
        return "inputs changed", inputs
    for p, h in entry.get("outputs", {}).items():
        if hash_path(Path(p)) != h:
            return f"output {p} changed or missing", inputs
    return None, inputs


def run_stages(
    stages: list[Stage],
    workdir: Path,
    *,
    log: Callable[[str], None] = print,
    force: set[str] = frozenset(),
    until: str | None = None,
) -> dict[str, float]:
    """Run the stages in order, skipping up-to-date ones, stopping after ``until`` if given.

    Returns the seconds of each stage that ran.
    """
    names = [s.name for s in stages]
    if until is not None and until not in names:
        raise ValueError(f"unknown stage {until!r}; stages: {', '.join(names)}")
    unknown = sorted(set(force) - set(names))
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r} in --force; stages: {', '.join(names)}")
    manifest = Manifest(workdir)
    timings: dict[str, float] = {}
    for i, stage in enumerate(stages, start=1):
        reason, inputs = why_run(stage, manifest)
        if stage.name in force:
            reason = "forced"
        if reason is None:
            log(f"[{i}/{len(stages)}] {stage.name}: up to date, skipped")
            if stage.name == until:
                break
            continue
        log(f"[{i}/{len(stages)}] {stage.name}: running ({reason}) {stage.description}")
        if reason != "not run yet":
            # Forget first: a kill during the fresh run then resumes it, under the new config.
            manifest.forget(stage.name)
            _clear_state(stage, Path(workdir))
        start = time.perf_counter()
        stage.run()
        seconds = time.perf_counter() - start
        for p in stage.outputs:
            if not Path(p).exists():
                raise RuntimeError(f"stage '{stage.name}' finished without writing {p}")
        manifest.record(stage, inputs, seconds)
        timings[stage.name] = seconds
        log(f"[{i}/{len(stages)}] {stage.name}: done in {seconds:.1f}s")
        if stage.name == until:
            break
    return timings


def _clear_state(stage: Stage, workdir: Path) -> None:
    """Remove a stage's resumable work before it runs again; only paths inside the workdir are touched."""
    root = workdir.resolve()
    for p in stage.state or stage.outputs:
        p = Path(p)
        if not p.exists():
            continue
        if not p.resolve().is_relative_to(root):
            continue  # never delete what the run does not own
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
