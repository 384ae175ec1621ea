import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dualdistill.synthetic.student import TAG_TOKENS


def test_tags_are_single_tokens_and_digits_split(tiny_tokenizer):
    for tag in TAG_TOKENS:
        assert len(tiny_tokenizer.encode(tag, add_special_tokens=False)) == 1, tag
    ids = tiny_tokenizer.encode("x=12345", add_special_tokens=False)
    pieces = [tiny_tokenizer.decode([i]) for i in ids]
    assert [p for p in pieces if p.isdigit()] == list("12345")


def test_roundtrip_text(tiny_tokenizer):
    text = "<code>\nprint(2**10)\n</code><executor>\n1024\n</executor> ünïcode"
    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    assert tiny_tokenizer.decode(ids) == text


def test_saved_model_loads_and_generates(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "qwen2"
    inputs = tok(["Compute 12 * 34."], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5
