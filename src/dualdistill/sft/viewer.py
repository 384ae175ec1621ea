"""A self-contained HTML page to check SFT data and its loss masks before spending GPU days on it.

Every example is shown token by token: the background colour says the segment the token starts in
(prompt, think, code, executor, answer, transition, text), and trained tokens are bold and underlined while
masked ones are faded and struck through. A filter by case and by first teacher updates the counts of
examples and of trained/masked tokens shown. Everything (CSS, JS, data) is inline; the page needs no
network and no server.

Guarantees: the masks shown are computed by ``sft.masking.encode``, the function training uses, with the
same prompt builder; text is HTML-escaped. Not guaranteed: a fast page for tens of thousands of long
examples (use ``limit``).
"""

from __future__ import annotations

import html
import json
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from dualdistill.format.examples import read_examples
from dualdistill.format.prompts import PromptTemplate
from dualdistill.format.trajectory import SWITCH_PHRASES, parse
from dualdistill.sft.masking import IGNORE, MaskConfig, MaskedExample, encode_example

COLOURS = {
    "prompt": "#eceff1",
    "text": "#ffffff",
    "think": "#e3f2fd",
    "code": "#e8f5e9",
    "executor": "#fff3e0",
    "answer": "#f3e5f5",
    "transition": "#ffebee",
}

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa}
.ex{background:#fff;border:1px solid #ccc;border-radius:6px;margin:1em 0;padding:.6em}
.ex h3{margin:.2em 0;font-size:14px} pre{white-space:pre-wrap;font-size:13px;line-height:1.6}
pre span{border-right:1px dotted #bbb}
.t{font-weight:bold;text-decoration:underline;text-decoration-color:#1b5e20}
.m{opacity:.45;text-decoration:line-through;text-decoration-color:#999}
.legend span{padding:2px 6px;margin-right:4px;border:1px solid #ccc}
#counts{font-weight:bold;margin:.6em 0}
"""

_JS = """
function applyFilter(){
  const c=document.getElementById('case').value, t=document.getElementById('teacher').value;
  let n=0, tr=0, ma=0;
  for(const ex of document.querySelectorAll('.ex')){
    const show=(c==='*'||ex.dataset.case===c)&&(t==='*'||ex.dataset.teacher===t);
    ex.style.display=show?'':'none';
    if(show){n++; tr+=+ex.dataset.trained; ma+=+ex.dataset.masked;}
  }
  document.getElementById('counts').textContent=
    `showing ${n} of ${document.querySelectorAll('.ex').length} examples; trained tokens ${tr}, masked tokens ${ma}`;
  document.getElementById('counts').dataset.shown=n;
}
document.addEventListener('DOMContentLoaded',()=>{
  for(const id of ['case','teacher']) document.getElementById(id).addEventListener('change',applyFilter);
  applyFilter();
});
"""


@dataclass
class ViewerOptions:
    template: PromptTemplate = "paper"
    tools: bool = True
    limit: int = 200
    max_length: int | None = None


def _kind_spans(ex: MaskedExample) -> list[tuple[int, str]]:
    """(start char, kind) breakpoints over ``full_text``, sorted."""
    text = ex.full_text[ex.prompt_chars :]
    base = ex.prompt_chars
    # (position, priority, kind): at a tie the higher priority wins (it sorts last).
    points: list[tuple[int, int, str]] = [(0, 1, "prompt")]
    points += [(base + seg.start, 1, seg.kind) for seg in parse(text)]
    for phrase in SWITCH_PHRASES:
        at = text.find(phrase)
        while at != -1:
            points += [(base + at, 2, "transition"), (base + at + len(phrase), 0, "text")]
            at = text.find(phrase, at + 1)
    return [(pos, kind) for pos, _, kind in sorted(points)]


def _render_tokens(ex: MaskedExample) -> str:
    points = _kind_spans(ex)
    starts = [p[0] for p in points]
    parts = []
    for i, ((s, e), lab) in enumerate(zip(ex.offsets, ex.labels, strict=True)):
        kind = points[max(0, bisect_right(starts, s) - 1)][1]
        piece = ex.full_text[s:e] if e > s else ("⟨EOS⟩" if i == len(ex.offsets) - 1 else "")
        cls = "t" if lab != IGNORE else "m"
        title = f"{ex.input_ids[i]} {'trained' if lab != IGNORE else 'masked'} {kind}"
        parts.append(
            f'<span class="{cls} k-{kind}" style="background:{COLOURS[kind]}" title="{title}">'
            f"{html.escape(piece)}</span>"
        )
    return "".join(parts)


def _options(values: list[str]) -> str:
    opts = ['<option value="*">all</option>']
    opts += [f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in sorted(set(values))]
    return "".join(opts)


def render_html(data_path: str | Path, tokenizer, mask: MaskConfig, options: ViewerOptions) -> str:
    """The whole page as one string."""
    blocks, cases, teachers = [], [], []
    for line, example in read_examples(data_path):
        if len(blocks) >= options.limit:
            break
        ex = encode_example(
            example, tokenizer, mask, template=options.template, tools=options.tools,
            max_length=options.max_length, truncation="truncate",
        )  # fmt: skip
        case, teacher = example.case or "unknown", str(example.meta.get("first_teacher", "unknown"))
        cases.append(case)
        teachers.append(teacher)
        n_tr = ex.n_trained
        n_ma = len(ex.labels) - n_tr
        head = f"#{html.escape(example.id or str(line))} · case {html.escape(case)} · teacher {html.escape(teacher)}"
        blocks.append(
            f'<div class="ex" data-case="{html.escape(case)}" data-teacher="{html.escape(teacher)}" '
            f'data-trained="{n_tr}" data-masked="{n_ma}"><h3>{head} · trained {n_tr} · masked {n_ma}'
            f"{' · truncated' if ex.truncated else ''}</h3><pre>{_render_tokens(ex)}</pre></div>"
        )
    legend = "".join(f'<span style="background:{c}">{k}</span>' for k, c in COLOURS.items())
    legend += '<span class="t">trained</span><span class="m">masked</span>'
    meta = html.escape(json.dumps({"data": str(data_path), "mask": mask.__dict__}))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>dualdistill SFT view</title>"
        f"<style>{_CSS}</style><script>{_JS}</script></head><body>"
        f"<h2>SFT data: {html.escape(str(data_path))}</h2><div class='legend'>{legend}</div>"
        f"<p>case <select id='case'>{_options(cases)}</select> teacher <select id='teacher'>"
        f"{_options(teachers)}</select></p><div id='counts'></div>"
        f"<div id='examples' data-meta=\"{meta}\">{''.join(blocks)}</div></body></html>"
    )


def write_view(
    data_path: str | Path, tokenizer, out: str | Path, mask: MaskConfig, options: ViewerOptions
) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(data_path, tokenizer, mask, options), encoding="utf-8")
    return out
