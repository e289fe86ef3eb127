"""The text Qwen3-Reranker against its model card's code, run here on the tiny random checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from omniret import Item
from omniret.errors import ItemError
from omniret.rerank import Reranker, load_reranker

# the model card's strings, written out here rather than imported
PREFIX = ('<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the '
          'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n')
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT = "Given a web search query, retrieve relevant passages that answer the query"
TOL = 1e-5


@pytest.fixture(scope="module")
def rr(tiny_text_reranker):
    return load_reranker(tiny_text_reranker, max_batch_items=2)


@pytest.fixture(scope="module")
def card(tiny_text_reranker):
    """The card's objects: left-padding tokenizer, full causal LM."""
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tiny_text_reranker), padding_side="left")
    model = Qwen3ForCausalLM.from_pretrained(str(tiny_text_reranker), dtype="float32").eval()
    return tok, model


def card_scores(card, query: str, docs: list[str], instruction=None, max_length: int = 8192) -> list[float]:
    """The card's process_inputs + compute_logits, one pair per forward."""
    import torch

    tok, model = card
    prefix = tok.encode(PREFIX, add_special_tokens=False)
    suffix = tok.encode(SUFFIX, add_special_tokens=False)
    out = []
    for d in docs:
        text = f"<Instruct>: {instruction if instruction is not None else DEFAULT}\n<Query>: {query}\n<Document>: {d}"
        ids = tok([text], padding=False, truncation="longest_first", return_attention_mask=False,
                  max_length=max_length - len(prefix) - len(suffix))["input_ids"][0]
        batch = tok.pad({"input_ids": [prefix + ids + suffix]}, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**batch).logits[:, -1, :]
        pair = torch.stack([logits[:, tok.convert_tokens_to_ids("no")], logits[:, tok.convert_tokens_to_ids("yes")]], 1)
        out.append(float(torch.nn.functional.log_softmax(pair, dim=1)[:, 1].exp()[0]))
    return out


def test_token_ids_match_the_card(rr, card):
    tok, _ = card
    assert isinstance(rr, Reranker) and rr.head_source == "lm_head.weight"
    ids = rr.encode_pair("what is a cat", "a cat is an animal", instruction="Find definitions")
    text = "<Instruct>: Find definitions\n<Query>: what is a cat\n<Document>: a cat is an animal"
    assert ids == tok.encode(PREFIX, add_special_tokens=False) + tok.encode(text) + tok.encode(SUFFIX, add_special_tokens=False)
    assert tok.decode(ids) == PREFIX + text + SUFFIX
    assert tok.decode(rr.encode_pair("q", "d")) == PREFIX + f"<Instruct>: {DEFAULT}\n<Query>: q\n<Document>: d" + SUFFIX


def test_truncation_cuts_the_middle_from_the_right(rr, card, monkeypatch):
    tok, _ = card
    prefix = tok.encode(PREFIX, add_special_tokens=False)
    suffix = tok.encode(SUFFIX, add_special_tokens=False)
    monkeypatch.setattr(rr, "max_length", len(prefix) + len(suffix) + 12)
    ids = rr.encode_pair("q", "one two three four five six seven eight nine ten eleven twelve")
    middle = tok.encode(f"<Instruct>: {DEFAULT}\n<Query>: q\n<Document>: one two")
    assert len(ids) == rr.max_length
    assert ids == prefix + middle[:12] + suffix


def test_scores_match_the_card_one_at_a_time(rr, card):
    docs = ["a cat is an animal", "stock prices fell", "cats purr", "x " * 40, "NULL"]
    got = rr.score("what is a cat", docs, instruction="Find definitions")
    np.testing.assert_allclose(got, card_scores(card, "what is a cat", docs, "Find definitions"), atol=TOL, rtol=0)
    single = [rr.score("what is a cat", [d], instruction="Find definitions")[0] for d in docs]
    np.testing.assert_allclose(got, single, atol=TOL, rtol=0)
    assert got.dtype == np.float32


def test_text_only(rr, tmp_path):
    with pytest.raises(ItemError, match=r"item 1 id='pic': model .* cannot read image \(it accepts text\)"):
        rr.score("q", ["d", Item(image=str(tmp_path / "x.png"), id="pic")])
    part = rr.score_partial("q", ["d", Item(image=str(tmp_path / "x.png"), id="pic")])
    assert part.indices == [0] and part.failures[0].id == "pic"
    assert rr.score("q", []).shape == (0,)
