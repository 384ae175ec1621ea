"""Hugging Face model cards (``README.md``) for every model directory dualdistill writes.

A card holds YAML metadata (``base_model``, ``library_name``, ``pipeline_tag``, ``datasets``, ``tags``),
how the model was made (data counts per composition case, masking rule, steps, loss), evaluation
results once a run has them, the ``dualdistill solve`` command, and a short plain-``transformers`` tool
loop for readers who do not install dualdistill.

Guarantees: the card is what ``huggingface_hub.ModelCard.load`` parses; ``add_results`` rewrites only the
results section, so training facts stay as training wrote them. The card is documentation: the
pipeline's output hashes skip a model directory's top-level ``README.md`` (``core.resume.hash_path``), so
adding results never makes a finished stage run again.
Not guaranteed: that a local ``base_model`` path means anything on the Hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from dualdistill.format.prompts import build_prompt

CARD = "README.md"
RESULTS_FILE = "eval_results.json"  # beside the card, so the card can be rebuilt with them
_RESULTS_START, _RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"

TOOL_LOOP = """```python
# The tool loop with plain transformers: generate until </code>, run the code, append its output.
import contextlib, io, re
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained("{path}")
model = AutoModelForCausalLM.from_pretrained("{path}")
text = {prompt!r}
for _ in range(4):  # at most 4 code blocks
    ids = tok(text, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=512, stop_strings=["</code>"], tokenizer=tok, do_sample=False)
    new = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    text += new
    if not new.endswith("</code>"):
        break
    code = new.rsplit("<code>", 1)[-1].removesuffix("</code>")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):  # untrusted code: run it in a sandbox in real use
        exec(code, {{}})
    text += f"\\n<executor>\\n{{buf.getvalue().strip()}}\\n</executor>\\n"
print(re.findall(r"\\\\boxed{{(.*?)}}", text)[-1:])
```"""


def _metadata(base_model: str | None, datasets: list[str]) -> dict:
    meta: dict = {"library_name": "transformers", "pipeline_tag": "text-generation",
                  "tags": ["dualdistill", "agentic-r1", "tool-use", "reasoning", "qwen2"]}  # fmt: skip
    if base_model:
        meta["base_model"] = base_model
    if datasets:
        meta["datasets"] = datasets
    return meta


def _example_prompt(model_dir: Path) -> str:

    template = "paper"
    cfg = model_dir / "sft_config.yaml"
    if cfg.exists():
        template = (yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("template", template)
    if template == "chat":
        template = "plain"  # the snippet cannot know the chat template's rendering; plain is close
    # A paper prompt already ends with its <think> prefill.
    return build_prompt("Compute 12 * 34.", template=template, tools=True)


def write_card(model_dir: str | Path, *, title: str, made: list[str], base_model: str | None = None,
               datasets: list[str] = ()) -> Path:  # fmt: skip
    """Write ``model_dir/README.md``: metadata, how it was made (``made``: Markdown lines), usage, and
    the evaluation results already recorded beside it."""
    model_dir = Path(model_dir)
    meta = yaml.safe_dump(_metadata(base_model, list(datasets)), sort_keys=False).strip()
    usage = TOOL_LOOP.format(path=str(model_dir), prompt=_example_prompt(model_dir))
    body = "\n".join([
        f"---\n{meta}\n---", "", f"# {title}", "",
        "A model made with dualdistill, an implementation of DualDistill ([Agentic-R1: Distilled "
        "Dual-Strategy Reasoning](https://arxiv.org/abs/2507.05707)). A student reasons in `<think>`, "
        "runs Python in `<code>` blocks whose output comes back in `<executor>`, and answers in "
        "`<answer>…\\boxed{…}…</answer>`.", "",
        "## How it was made", "", *made, "",
        "## Evaluation", "", _RESULTS_START, _results_md(model_dir), _RESULTS_END, "",
        "## Use", "", "With dualdistill (the tool loop runs in its sandbox):", "",
        f'```bash\ndualdistill solve --model {model_dir} "Compute 12 * 34."\n```', "",
        "Without it:", "", usage, "",
    ])  # fmt: skip
    path = model_dir / CARD
    path.write_text(body, encoding="utf-8")
    return path


def training_facts(config, data_path: str | Path, init_model: str, steps: int, loss: float | None,
                   stats) -> list[str]:  # fmt: skip
    """The "how it was made" lines of an SFT run: data per composition case, masking rule, steps."""
    m = config.masking
    cases = ", ".join(f"{c} {n}" for c, n in sorted(stats.per_case.items())) or "none recorded"
    masked = [name for name, on in (("executor output", m.executor), ("failed code blocks", m.error_code),
                                    ("a failed first attempt", m.first_attempt)) if on]  # fmt: skip
    until = (
        "a wrong-to-right sentence (the released rule)"
        if m.first_attempt_until == "switch"
        else "any transition"
    )
    return [
        f"- initial model: `{init_model}`",
        f"- data: `{data_path}`: {stats.kept} of {stats.examples} examples trained ({cases})",
        f"- loss masked on: {', '.join(masked) or 'nothing'}; a first attempt is masked before {until}",
        f"- template `{config.template}`, tools {config.tools}, lr {config.lr} ({config.schedule}), "
        f"epochs {config.epochs}, loss normalisation `{config.loss_normalization}`",
        f"- {steps} optimizer steps; final train loss {loss if loss is None else round(loss, 4)}; "
        f"{stats.trained_tokens} of {stats.tokens} tokens trained",
    ]


def _results_md(model_dir: Path) -> str:
    path = model_dir / RESULTS_FILE
    if not path.exists():
        return "Not evaluated yet (`dualdistill eval --model DIR --out OUT`)."
    results = json.loads(path.read_text(encoding="utf-8"))
    lines = ["| benchmark | problems | accuracy % | 95% CI | tool use % |", "|---|---|---|---|---|"]
    for name, s in results.items():
        if not s.get("records"):
            continue
        lo, hi = s["accuracy_ci95"]
        lines.append(f"| {name} | {s['problems']} | {100 * s['accuracy']:.1f} | "
                     f"{100 * lo:.1f}–{100 * hi:.1f} | {100 * s['tool_use_rate']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def add_results(model_dir: str | Path, summaries: dict[str, dict]) -> None:
    """Record evaluation summaries (``{benchmark: summary}``) beside the card and show them in it."""
    model_dir = Path(model_dir)
    path = model_dir / CARD
    if not path.exists():
        return
    (model_dir / RESULTS_FILE).write_text(json.dumps(summaries, indent=1), encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    head, _, rest = text.partition(_RESULTS_START)
    _, _, tail = rest.partition(_RESULTS_END)
    path.write_text(
        f"{head}{_RESULTS_START}\n{_results_md(model_dir)}\n{_RESULTS_END}{tail}", encoding="utf-8"
    )
