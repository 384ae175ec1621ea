"""Stage bookkeeping for the pipeline: a manifest of configs and content hashes, and skip/re-run rules.

A stage is a named step with input paths, output paths, a config (any JSON-able mapping) and a function
that produces the outputs. ``run_stages`` runs them in order and records each finished stage in
``WORKDIR/manifest.json``.

Guarantees:
- A stage is skipped only when it finished before (recorded in the manifest), its config hash and input
  hashes are unchanged, and its outputs still exist with the hashes recorded then.
- Paths in the manifest are relative to the workdir, and inputs are keyed by content, so the same
  workdir given relatively, absolutely, moved or copied is recognised and its stages skipped.
- A stage whose config or inputs changed is run again, and so is every stage after it whose inputs then
  change. Such a re-run starts over, but nothing is deleted: the stage's ``state`` paths (default: its
  outputs) are moved aside to ``WORKDIR/superseded/<time>-<stage>/`` first, so records or checkpoints
  made under the old config are never resumed as if they were current, and paid API outputs survive.
- A stage killed mid-way is not recorded as finished, and runs again; stages are written so that running
  again resumes (append-only records, trainer checkpoints). Its start is recorded with its config and
  input hashes, so a resume under *other* settings moves the partial work aside instead of mixing it in.
- The manifest is written atomically, so a kill never leaves it half-written. One process at a time
  runs a workdir (``core.records.locked``); a second fails at once naming the first one's pid.

A stage that a user could run by hand runs a ``Command``: the argv of a real ``dualdistill`` (or
``accelerate launch``) command plus the config files it reads. The pipeline runs that argv in-process
and ``--dry-run`` prints it, so the printed command is the run, not a second description of it. Its
cache key is that command too (``command_key``): the argv and every config file it writes, less the
fields marked ``identity=False`` (changing a batch size or a concurrency re-runs nothing), with paths under the
work directory written relative to it.

Not guaranteed: detecting changes to files outside the declared inputs (code changes, for instance,
are seen only through the recorded package version).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualdistill import __version__
from dualdistill.core.config import save_config, stage_settings
from dualdistill.core.records import locked
from dualdistill.core.resume import hash_path


def hash_config(config: Any) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Runs ``dualdistill ARGS...`` in this process (the CLI's ``run_in_process``); returns the exit status.
Runner = Callable[[list[str]], int | None]


class CommandFailed(RuntimeError):
    """A stage's command exited non-zero (its own error message was printed above)."""


@dataclass(frozen=True)
class Command:
    """A command line that does a stage's work, and the config files (path -> dataclass) it reads.

    ``argv[0]`` is ``dualdistill`` (run in this process, through the CLI itself) or another program
    (``accelerate``), run as a subprocess. Calling it writes the files, then runs the argv.
    """

    argv: list[str]
    files: dict[Path, Any] = field(default_factory=dict)

    def write_files(self) -> None:
        for path, config in self.files.items():
            save_config(config, path)

    def shell(self) -> str:
        return shlex.join(self.argv)

    def __call__(self, runner: Runner | None = None) -> None:
        """Write the config files, then run the argv: ``dualdistill ...`` through ``runner`` (the CLI's
        in-process entry, handed down by the CLI so this module need not import it), anything else as a
        subprocess."""
        self.write_files()
        if self.argv[0] == "dualdistill":
            if runner is None:
                raise ValueError(f"`{self.shell()}` runs in-process: pass the CLI's runner to run_stages")
            try:
                code = runner(self.argv[1:])
            except Exception as e:  # a usage error (click's): the argv does not fit the CLI
                if not hasattr(e, "format_message"):
                    raise
                raise CommandFailed(f"`{self.shell()}`: {e.format_message()}") from None
        else:
            code = subprocess.run(self.argv).returncode
        if code:  # None or 0: success
            raise CommandFailed(f"`{self.shell()}` exited with status {code}")


def command_key(command: Command, root: Path) -> dict[str, Any]:
    """What a stage's result depends on, besides its inputs' content: the command line and the speed-free
    settings of each config file it writes. Paths under ``root`` (the work directory, as given or
    resolved) become ``{workdir}/...``, so a moved or copied work directory keeps its keys."""

    prefixes = sorted({str(root), str(Path(root).resolve())}, key=len, reverse=True)

    def portable(node: Any) -> Any:
        if isinstance(node, str | Path):
            text = str(node)
            for prefix in prefixes:  # also inside an argument: "vllm:{workdir}/models/…"
                text = "{workdir}" if text == prefix else text.replace(prefix + os.sep, "{workdir}" + os.sep)
            return text
        if isinstance(node, dict):
            return {portable(k): portable(v) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [portable(v) for v in node]
        return node

    return {"argv": portable(command.argv),
            "files": {portable(path): portable(stage_settings(cfg)) for path, cfg in command.files.items()}}  # fmt: skip


@dataclass
class Stage:
    name: str
    run: Callable[[], None]
    inputs: list[Path] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    # The cache key beyond the inputs' content; None: the command's (command_key). A stage that runs a
    # Python function instead of a command must give one.
    config: dict[str, Any] | None = None
    description: str = ""
    # Where the stage keeps resumable work (appended records, checkpoints); removed when it re-runs.
    # Empty: its outputs.
    state: list[Path] = field(default_factory=list)

    def key(self, root: Path) -> dict[str, Any]:
        if self.config is not None:
            return self.config
        if not isinstance(self.run, Command):
            raise TypeError(f"stage '{self.name}' runs no Command and gives no config key")
        return command_key(self.run, root)


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

        self.workdir = Path(workdir)

    def rel(self, path: Path) -> str:
        """How the manifest names ``path``: relative to the workdir inside it, else absolute."""
        path, root = Path(path).resolve(), self.workdir.resolve()
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)

    def entry(self, name: str) -> dict | None:
        return self.data["stages"].get(name)

    def started(self, name: str) -> dict | None:
        return self.data.get("started", {}).get(name)

    def start(self, stage: Stage, inputs: dict) -> None:
        """Note that ``stage`` began under its config and these inputs (read by a later resume)."""
        self.data["stages"].pop(stage.name, None)
        self.data.setdefault("started", {})[stage.name] = {
            "config_hash": hash_config(stage.key(self.workdir)),
            "inputs": inputs,
        }
        self.save()

    def record(self, stage: Stage, inputs: dict, seconds: float) -> None:
        self.data.get("started", {}).pop(stage.name, None)
        key = stage.key(self.workdir)
        self.data["stages"][stage.name] = {
            "config": key,
            "config_hash": hash_config(key),
            "inputs": inputs,
            "outputs": {self.rel(p): hash_path(p) for p in stage.outputs},
            "seconds": round(seconds, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "version": __version__,
        }
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)


def why_run(stage: Stage, manifest: Manifest) -> tuple[str | None, dict]:
    """The reason a stage must run (``None`` when it can be skipped), and its current input hashes."""
    inputs = {manifest.rel(p): hash_path(p) for p in stage.inputs}
    missing = [p for p, h in inputs.items() if h is None]
    if missing:
        raise FileNotFoundError(f"stage '{stage.name}': input {missing[0]} does not exist")
    entry = manifest.entry(stage.name)
    if entry is None:
        begun = manifest.started(stage.name)
        if begun is None:
            return "not run yet", inputs
        if (
            begun.get("config_hash") != hash_config(stage.key(manifest.workdir))
            or begun.get("inputs") != inputs
        ):
            return "partial work from other settings", inputs
        return "resuming", inputs
    if entry.get("config_hash") != hash_config(stage.key(manifest.workdir)):
        return "config changed", inputs
    if entry.get("inputs") != inputs:
        return "inputs changed", inputs
    for p, h in entry.get("outputs", {}).items():
        path = Path(p) if Path(p).is_absolute() else manifest.workdir / p
        if hash_path(path) != h:
            return f"output {p} changed or missing", inputs
    return None, inputs


def run_stages(
    stages: list[Stage],
    workdir: Path,
    *,
    log: Callable[[str], None] = print,
    force: set[str] = frozenset(),
    until: str | None = None,
    runner: Runner | None = None,
) -> dict[str, float]:
    """Run the stages in order, skipping up-to-date ones, stopping after ``until`` if given. A stage
    whose ``run`` is a ``Command`` of ``dualdistill`` runs through ``runner``.

    Returns the seconds of each stage that ran.
    """
    names = [s.name for s in stages]
    if until is not None and until not in names:
        raise ValueError(f"unknown stage {until!r}; stages: {', '.join(names)}")
    unknown = sorted(set(force) - set(names))
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r} in --force; stages: {', '.join(names)}")
    with locked(workdir, "pipeline run"):
        return _run(stages, Manifest(workdir), log, force, until, runner)


def _run(
    stages: list[Stage],
    manifest: Manifest,
    log: Callable[[str], None],
    force: set[str],
    until: str | None,
    runner: Runner | None,
) -> dict[str, float]:
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
        if reason not in ("not run yet", "resuming"):
            aside = _set_aside(stage, manifest)
            if aside:
                log(f"    earlier work of {stage.name} moved to {aside}")
        # Noted before running: a kill during the fresh run then resumes it, under this config.
        manifest.start(stage, inputs)
        start = time.perf_counter()
        stage.run(runner) if isinstance(stage.run, Command) else stage.run()
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


def _set_aside(stage: Stage, manifest: Manifest) -> Path | None:
    """Move a stage's resumable work out of the way before it starts over; never delete it.

    Only paths inside the workdir are moved (the run does not own the rest). Returns where they went.
    """
    root = manifest.workdir.resolve()
    dest = root / "superseded" / f"{time.strftime('%Y%m%d-%H%M%S')}-{stage.name}"
    moved = False
    for p in stage.state or stage.outputs:
        p = Path(p)
        if not p.exists() or not p.resolve().is_relative_to(root):
            continue
        target = dest / p.resolve().relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(p), str(target))
        moved = True
    return dest if moved else None
