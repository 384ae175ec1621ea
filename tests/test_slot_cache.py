"""The engine's KV cache: where a packed pass writes, what each query may see, and the attention switch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dualdistill.backends.slot_cache import ATTENTION, SlotCache, packed


def test_a_pass_writes_each_token_at_its_rows_next_position():
    cache = SlotCache(4, "cpu")
    cache.plan([(0, [5, 6, 7]), (2, [9])])
    p = cache.plan([(2, [1]), (0, [8, 8])])
    assert cache.lens.tolist() == [5, 0, 2, 0]
    assert cache.held(0).tolist() == [5, 6, 7, 8, 8] and cache.held(2).tolist() == [9, 1]
    assert p.ids.tolist() == [[1, 8, 8]]
    assert p.position_ids.tolist() == [[1, 3, 4]]  # each token's position in its own row
    assert p.last.tolist() == [0, 2]  # the logits of each row's last token
    # slot 2 feeds one token and attends over slots 0..2: it sees its 2 positions; the others only position 0
    assert p.one_hi == 3 and allowed(p.one_mask[:, 0, 0]) == [[True, False], [True, False], [True, True]]
    # slot 0 reads two tokens, each seeing its row up to itself
    assert p.many_slot.tolist() == [0]
    assert allowed(p.many_mask[0, 0]) == [[True] * 4 + [False], [True] * 5]


def allowed(mask: torch.Tensor) -> list:
    """Where an additive mask lets a query attend (0), checking it holds nothing but 0 and -inf."""
    assert ((mask == 0) | (mask == float("-inf"))).all()
    return (mask == 0).tolist()


def test_rows_that_all_see_everything_need_no_mask():
    cache = SlotCache(2, "cpu")
    cache.plan([(0, [1, 2]), (1, [3, 4])])
    p = cache.plan([(0, [5]), (1, [6])])
    assert p.one_dense and p.one_mask is None and p.one_kv == 3


def test_prefixes_move_with_their_tokens_and_growth_keeps_them():
    cache = SlotCache(3, "cpu")
    layer = torch.arange(3 * 2 * 1 * 4, dtype=torch.float32).reshape(3, 2, 1, 4)
    cache.plan([(0, [7, 8, 9])])
    cache._allocate(layer)
    cache.keys[0][0, :, :3] = 1.0
    cache.copy_prefix(0, 2, 2)
    assert cache.held(2).tolist() == [7, 8] and cache.keys[0][2, :, :2].eq(1.0).all()
    keys, values = cache.export(0)
    cache.reserve(cache.capacity * 4)  # grown: content kept
    assert cache.held(0).tolist() == [7, 8, 9] and cache.keys[0][0, :, :3].eq(1.0).all()
    cache.load(1, np.array([7, 8, 9]), keys, values, 2)
    assert cache.held(1).tolist() == [7, 8] and torch.equal(cache.keys[0][1, :, :2], keys[0][:, :2])
    assert cache.common_prefix(np.array([7, 8, 9, 4])) == (0, 3)
    assert cache.common_prefix(np.array([6])) == (None, 0)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_switches_attention_for_the_pass_and_restores_it(
    tiny_model_dir, tiny_tokenizer, implementation
):
    """Whatever the model was loaded with, the pass runs through the slot attention and the model
    comes back as it was (it may be trained further), also after an error."""
    from transformers import AutoModelForCausalLM

    from dualdistill.backends.hf import HFBackend

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=implementation)
    with pytest.raises(RuntimeError, match="boom"), packed(model):
        assert model.config._attn_implementation == ATTENTION
        raise RuntimeError("boom")
    assert model.config._attn_implementation == implementation
    import asyncio

    with HFBackend.from_objects(model, tiny_tokenizer) as backend:
        text = asyncio.run(
            backend.complete("Compute 3 + 4.", max_new_tokens=6, stop=[], temperature=0.0)
        ).text
    assert model.config._attn_implementation == implementation
    # the same greedy text as transformers' own generate with the model's attention
    ids = tiny_tokenizer("Compute 3 + 4.", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=6, do_sample=False, eos_token_id=None)
    assert text == tiny_tokenizer.decode(out[0, ids["input_ids"].shape[1] :])


def test_the_prefix_cache_finds_the_longest_shared_prefix_and_drops_what_a_longer_entry_extends():
    from dualdistill.backends.prefix_cache import PrefixCache

    kv = lambda n: [torch.zeros(1, n, 2)]  # noqa: E731  one layer, (heads, positions, dim)
    cache = PrefixCache(max_tokens=12)
    cache.put([1, 2, 3], kv(3), kv(3))
    cache.put([1, 2, 3, 4, 5], kv(5), kv(5))  # extends the first: it goes
    cache.put([7, 8, 9], kv(3), kv(3))
    assert [e.ids.tolist() for e in cache.entries.values()] == [[1, 2, 3, 4, 5], [7, 8, 9]]
    entry, n = cache.lookup([1, 2, 3, 9, 9])
    assert entry.ids.tolist() == [1, 2, 3, 4, 5] and n == 3
    assert cache.lookup([1, 2, 3, 4, 5])[1] == 4  # one token is always left to read
    assert cache.lookup([5, 5]) == (None, 0)
    cache.put([6, 6, 6, 6, 6], kv(5), kv(5))  # 13 tokens > 12: the least recently used entry goes
    assert [e.ids.tolist() for e in cache.entries.values()] == [[1, 2, 3, 4, 5], [6, 6, 6, 6, 6]]
