"""Shared fixtures: a tiny real BPE tokenizer and a tiny random-init Qwen2, built once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved model directory (tokenizer + random Qwen2) that from_pretrained loads."""
    from dualdistill.synthetic.student import build_student

    return build_student(tmp_path_factory.mktemp("tiny-model"), size="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)
