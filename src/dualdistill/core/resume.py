"""What a resumable output directory was made with, so a resume never mixes two configurations.

Every long job that appends to a directory (``teach``, ``eval``, ``self-distill sample``) stores an
identity beside its records the first time: the settings that change what a record contains, and a
fingerprint of the model's weights. A later run into the same directory must present the same identity.

Guarantees:
- ``check_identity`` raises ``ResumeMismatch`` (a ``DataError`` naming the identity file and the first
  differing key) before anything is written, so a refused resume leaves the directory as it was.
- ``model_fingerprint`` changes when any weight or config file of a local model directory changes,
  also at the same path; it is cheap for large models (sampled, see below).

Not guaranteed: ``model_fingerprint`` hashes files up to 64 MiB whole, and larger ones by size and
three 1 MiB windows (head, middle, tail). Two large files that differ only outside those windows
fingerprint alike; retrained weights never do in practice, as every tensor changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from dualdistill.core.records import DataError

_WHOLE = 64 * 1024 * 1024
_WINDOW = 1024 * 1024
# Files of a model directory that decide what it generates; logs, cards and checkpoints do not.
_MODEL_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".jinja", ".pt")


class ResumeMismatch(DataError):
    """The directory holds partial work made with other settings."""


def model_fingerprint(model: str) -> str:
    """A short hash of a local model directory's weights and configs; URLs and names map to themselves."""
    path = Path(model)
    if not path.is_dir():
        return str(model)
    h = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(_MODEL_SUFFIXES))
    for f in files:
        if f.name in ("trainer_state.json", "training_args.bin", "manifest.json"):
            continue
        size = f.stat().st_size
        h.update(f"{f.name}\0{size}\0".encode())
        with f.open("rb") as fh:
            if size <= _WHOLE:
                h.update(fh.read())
                continue
            for offset in (0, size // 2, size - _WINDOW):
                fh.seek(offset)
                h.update(fh.read(_WINDOW))
    return h.hexdigest()[:16]


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested mappings as dotted keys, so a setting added inside a section falls back to its default."""
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_identity(
    out_dir: str | os.PathLike, name: str, identity: dict[str, Any], records: str,
    defaults: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    """Store ``identity`` in ``out_dir/.<name>-identity.json`` or check it against the stored one.

    Call it after taking the directory's lock and before appending to ``out_dir/records``. While that
    file holds nothing, the identity is (re)written, so a run that failed before its first record
    (a typo in a URL, say) does not bind the next one; once records exist, runs must match key by key.
    A key the stored identity lacks (written before the setting existed) counts as its value in
    ``defaults``, so older records still resume under the default; a key only the stored identity has (a
    setting that no longer decides what a record holds) is ignored.
    """
    path = Path(out_dir) / f".{name}-identity.json"
    now = json.loads(json.dumps(identity, sort_keys=True, default=str))
    data = Path(out_dir) / records
    if path.exists() and data.exists() and data.stat().st_size > 0:
        try:
            was = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(path, f"corrupt resume identity ({e}); move the directory aside") from None
        fill = _flat(json.loads(json.dumps(defaults or {}, sort_keys=True, default=str)))
        was, now = _flat(was), _flat(now)
        for key in sorted(now):
            if was.get(key, fill.get(key)) != now.get(key):
                raise ResumeMismatch(
                    path,
                    f"the partial {name} here was made with {key}={was.get(key, fill.get(key))!r}, this run has "
                    f"{key}={now.get(key)!r}; use a new output directory, or the old settings to resume",
                )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(now, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


# Files larger than this are keyed by size and mtime, so a 15 GB checkpoint is not read on every run.
_FULL_HASH_LIMIT = 256 * 1024 * 1024
# Top-level files of an output directory that document it rather than being it.
DOCUMENTATION = ("README.md", "eval_results.json")


def hash_path(path: Path) -> str | None:
    """A content hash of a file or a directory tree; ``None`` when it does not exist."""
    path = Path(path)
    if not path.exists():
        return None
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        rel = f.name if f == path else str(f.relative_to(path))
        if rel.endswith((".tmp", ".lock")) or "/checkpoint-" in f"/{rel}":
            continue  # transient training state is not an output
        if f != path and rel in DOCUMENTATION:
            continue  # a model card, rewritten with results after the stage (sft.modelcard.add_results)
        h.update(rel.encode() + b"\0")
        st = f.stat()
        if st.st_size > _FULL_HASH_LIMIT:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            continue
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]
