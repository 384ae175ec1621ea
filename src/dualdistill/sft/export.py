"""Training data for other trainers, and back: OpenAI messages, ShareGPT, Hugging Face datasets, and the
paper's released training set.

Examples are ``format.examples.SFTExample`` (what ``compose`` (with its single-teacher sets) and ``self-distill build`` write);
here they travel as their ``to_dict()`` form.

Formats:

- ``messages``: OpenAI chat format. Each ``<code>`` block that the executor answered becomes an
  assistant message whose ``tool_calls`` hold one ``python`` call (``{"code": ...}``), followed by a
  ``tool`` message with the executor's output. The assistant's text around the calls is its
  ``content``. This is what chat-template trainers (TRL, LLaMA-Factory, axolotl) consume.
- ``sharegpt``: ``conversations`` of one ``human`` and one ``gpt`` turn holding the whole trajectory,
  tags included (ShareGPT has no place for text before a function call, so nothing is split).
- ``hf``: a ``datasets`` dataset with the example's fields plus ``messages``, saved with
  ``save_to_disk`` (or as one Parquet file when OUT ends in ``.parquet``), with a dataset card.

Guarantees: ``import_file(export_examples(x))`` gives back the same examples, texts byte for byte
(the gaps between tags are kept where they differ from the executor's own layout); a malformed input
line is named by file and line.
Not guaranteed: that another trainer masks the executor output as ``train`` does; with ``messages`` a
trainer that trains only assistant turns does, with ``sharegpt`` it does not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Literal

from dualdistill.core.records import DataError, read_jsonl, scalar_text, write_jsonl
from dualdistill.format.examples import SFTExample
from dualdistill.format.examples import read_examples as read
from dualdistill.format.trajectory import ALSO_CODE, ALSO_TEXT, WRONG_TO_RIGHT

Format = Literal["messages", "sharegpt", "hf"]
FORMATS: tuple[str, ...] = ("messages", "sharegpt", "hf")
TOOL_NAME = "python"
# One executed block: the code, the gap after </code>, the executor's output.
_CALL = re.compile(r"<code>(.*?)</code>(\s*)<executor>(.*?)</executor>", re.S)
_CANON_GAP = "\n"  # format.trajectory.executor_block's layout: "</code>\n<executor>"
_META = "dualdistill"  # key of the fields that are not messages (id, answer, case, ...)


# ----------------------------------------------------------------------------- messages
def to_messages(example: dict) -> dict:
    """One SFT example as ``{"messages": [...], "dualdistill": {provenance}}``."""
    text = example["text"]
    messages: list[dict] = [{"role": "user", "content": example["problem"]}]
    pos = 0
    for i, m in enumerate(_CALL.finditer(text)):
        call: dict = {"id": f"call_{i}", "type": "function",
                      "function": {"name": TOOL_NAME, "arguments": json.dumps({"code": m.group(1)})}}  # fmt: skip
        if m.group(2) != _CANON_GAP:
            call["gap"] = m.group(2)  # kept so the round trip is exact
        messages.append({"role": "assistant", "content": text[pos : m.start()], "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": m.group(3)})
        pos = m.end()
    messages.append({"role": "assistant", "content": text[pos:]})
    meta = {k: v for k, v in example.items() if k not in ("problem", "text")}
    return {"messages": messages, _META: meta}


def from_messages(row: dict, *, where: str = "<row>") -> dict:
    """The SFT example of a ``to_messages`` row (or of any user/assistant/tool conversation)."""
    msgs = row.get("messages")
    if (
        not isinstance(msgs, list)
        or not msgs
        or not isinstance(msgs[0], dict)
        or msgs[0].get("role") != "user"
    ):
        raise ValueError(f"{where}: 'messages' must be a list starting with a user message")
    parts: list[str] = []
    pending: dict | None = None
    for j, msg in enumerate(msgs[1:], start=1):
        role = msg.get("role")
        if role == "assistant":
            parts.append(msg.get("content") or "")
            calls = msg.get("tool_calls") or []
            if len(calls) > 1:
                raise ValueError(
                    f"{where}: message {j} has {len(calls)} tool calls; one per message is supported"
                )
            if calls:
                pending = calls[0]
                code = json.loads(pending["function"]["arguments"])["code"]
                parts.append(f"<code>{code}</code>{pending.get('gap', _CANON_GAP)}")
        elif role == "tool":
            if pending is None:
                raise ValueError(f"{where}: message {j} is a tool result without a tool call before it")
            parts.append(f"<executor>{msg.get('content') or ''}</executor>")
            pending = None
        else:
            raise ValueError(f"{where}: message {j} has role {role!r} (expected assistant or tool)")
    meta = dict(row.get(_META) or {})
    return {**meta, "problem": msgs[0]["content"], "text": "".join(parts)}


# ----------------------------------------------------------------------------- sharegpt
def to_sharegpt(example: dict) -> dict:
    meta = {k: v for k, v in example.items() if k not in ("problem", "text")}
    turns = [{"from": "human", "value": example["problem"]}, {"from": "gpt", "value": example["text"]}]
    return {"conversations": turns, _META: meta}


def from_sharegpt(row: dict, *, where: str = "<row>") -> dict:
    turns = row.get("conversations")
    if not isinstance(turns, list) or [t.get("from") for t in turns if isinstance(t, dict)] != [
        "human",
        "gpt",
    ]:
        raise ValueError(f"{where}: 'conversations' must be one human turn and one gpt turn")
    return {**dict(row.get(_META) or {}), "problem": turns[0]["value"], "text": turns[1]["value"]}


# ----------------------------------------------------------------------------- files
def example_dicts(path: str | Path) -> list[dict]:
    """The examples of a training JSONL (``format.examples.read_examples``: bad lines are named), as dicts."""

    out = [example.to_dict() for _, example in read(path)]
    if not out:
        raise DataError(path, "no examples")
    return out


def export_examples(examples: list[dict], fmt: Format, out: str | Path) -> Path:
    """Write ``examples`` in ``fmt`` to ``out`` (a JSONL file; for ``hf`` a directory or ``.parquet``)."""
    out = Path(out)
    if fmt == "messages":
        write_jsonl(out, [to_messages(e) for e in examples])
    elif fmt == "sharegpt":
        write_jsonl(out, [to_sharegpt(e) for e in examples])
    elif fmt == "hf":
        _write_hf(examples, out)
    else:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return out


def _hf_rows(examples: list[dict]) -> list[dict]:
    # Provenance goes in as one JSON string: its fields differ between composed and self-distilled sets,
    # and Arrow needs one schema.
    rows = []
    for e in examples:
        row = to_messages(e)
        meta = row.pop(_META)
        rows.append({"id": str(meta.get("id", "")), "problem": e["problem"], "text": e["text"],
                     "case": str(meta.get("case") or ""), "messages": json.dumps(row["messages"]),
                     "metadata": json.dumps(meta, ensure_ascii=False)})  # fmt: skip
    return rows


def _write_hf(examples: list[dict], out: Path) -> None:
    from datasets import Dataset

    ds = Dataset.from_list(_hf_rows(examples))
    if out.suffix == ".parquet":
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(out))
        out.with_suffix(".md").write_text(dataset_card(examples), encoding="utf-8")
        return
    # Written beside, then renamed: a kill never leaves a half-written dataset under the final name.
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    ds.save_to_disk(str(partial))
    (partial / "README.md").write_text(dataset_card(examples), encoding="utf-8")
    old = out.parent / f".{out.name}.replaced-{os.getpid()}"
    if out.exists():
        out.rename(old)
    partial.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def dataset_card(examples: list[dict]) -> str:
    cases = Counter(str(e.get("case") or "unknown") for e in examples)
    rows = "\n".join(f"| {c} | {n} |" for c, n in sorted(cases.items()))
    return f"""---
task_categories: [text-generation]
tags: [dualdistill, tool-use, reasoning, distillation]
---

# DualDistill training trajectories

{len(examples)} trajectories written by `dualdistill export --format hf`. Columns: `problem`, `text` (the
whole trajectory: `<think>`, `<code>`, `<executor>`, `<answer>`), `messages` (OpenAI chat format as JSON,
executor results as tool messages), `case` (composition case) and `metadata` (provenance as JSON).

| case | trajectories |
|---|---|
{rows}

Load: `datasets.load_from_disk(DIR)` (or `load_dataset("parquet", data_files=FILE)`); train with
`dualdistill import DIR --format hf --out data.jsonl` then `dualdistill train`.
"""


def import_file(path: str | Path, fmt: Format) -> list[dict]:
    """Examples from a file in ``fmt``: the inverse of ``export_examples``."""
    path = Path(path)
    if fmt == "hf":
        return _load_hf(path)
    convert = {"messages": from_messages, "sharegpt": from_sharegpt}.get(fmt)
    if convert is None:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = []
    for line, row in read_jsonl(path):
        try:
            example = convert(row, where=f"{path}:{line}")
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(path, f"not a {fmt} row: {e}", line=line) from None
        out.append(SFTExample.from_dict(example, path=path, line=line).to_dict())
    return out


def _load_hf(path: Path) -> list[dict]:
    import datasets

    if not path.exists():
        raise DataError(path, "not found")
    ds = (datasets.load_dataset("parquet", data_files=str(path), split="train") if path.suffix == ".parquet"
          else datasets.load_from_disk(str(path)))  # fmt: skip
    return [{**json.loads(r["metadata"]), "problem": r["problem"], "text": r["text"]} for r in ds]


# ----------------------------------------------------------------------------- the released data
def import_released(path: str | Path) -> list[dict]:
    """The paper's released training set (rows ``{"problem", "synthetic_data"}``, as its dataset card and
    ``sft/dataloader.py`` read them) as SFT examples that ``train`` accepts.

    The released rows hold no ids, answers or cases: ids are ``released-<line>``, and the case is read
    from the transition sentence in the text (the masks do not need it; they come from the text).
    """

    out = []
    for line, row in read_jsonl(path):
        problem = scalar_text(row.get("problem"), "problem", path, line)
        text = row.get("synthetic_data")
        if not isinstance(text, str) or not text.strip():
            raise DataError(
                path, "field 'synthetic_data' must be a non-empty string (the trajectory)", line=line
            )
        if any(s in text for s in WRONG_TO_RIGHT):
            case = "wrong_right"
        elif any(s in text for s in (ALSO_CODE, ALSO_TEXT)):
            case = "right_right"
        else:
            case = "right_only"
        out.append(
            SFTExample(problem, text, id=f"released-{line}", case=case, meta={"source": "released"}).to_dict()
        )
    if not out:
        raise DataError(path, "no rows")
    return out
