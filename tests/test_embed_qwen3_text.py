"""Text Qwen3-Embedding: the model card's query format, appended <|endoftext|>, last-token pooling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omniret import Item, ItemError
from omniret.embed import load_embedder


@pytest.fixture(scope="module")
def emb(tiny_text_embedding):
    return load_embedder(str(tiny_text_embedding), device="cpu", max_batch_tokens=64)


def _reference(path, text: str) -> np.ndarray:
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(str(path))
    model = Qwen3ForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    ids = tok(text, add_special_tokens=False)["input_ids"] + [151643]
    with torch.no_grad():
        h = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
    return torch.nn.functional.normalize(h, dim=-1).numpy()


def test_documents_and_queries_match_model_card(emb, tiny_text_embedding):
    docs = ["The capital of China is Beijing.", "Gravity is a force " * 30, "日本語のテキスト"]
    got = emb.embed(docs)
    for d, g in zip(docs, got, strict=True):
        np.testing.assert_allclose(g, _reference(tiny_text_embedding, d), atol=1e-5)
    task = "Given a web search query, retrieve relevant passages that answer the query"
    q = emb.embed(["What is the capital of China?"], instruction=task)[0]
    want = _reference(tiny_text_embedding, f"Instruct: {task}\nQuery:What is the capital of China?")
    np.testing.assert_allclose(q, want, atol=1e-5)


def test_eod_appended_and_truncation_keeps_it(tiny_text_embedding):
    e = load_embedder(str(tiny_text_embedding), device="cpu", max_length=5)
    ids = e.prepare_all(["one two three four five six seven"], None)[0]
    assert len(ids) == 5 and ids[-1] == 151643


def test_batched_equals_single_and_errors(emb):
    items = ["a", "b c d e f g " * 10, "x y", Item(text=["p", "q"])]
    batched = emb.embed(items)
    single = np.stack([emb.embed([it])[0] for it in items])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    res = emb.embed_partial(["ok", Item(text="  ", id="blank"), Item(image="a.png", id="img")])
    assert res.indices == [0]
    assert [f.id for f in res.failures] == ["blank", "img"]
    with pytest.raises(ItemError, match=r"item 1 id='img': model .* cannot embed image"):
        emb.embed(["ok", Item(image="a.png", id="img")])
    assert emb.dims == (32, 64)
