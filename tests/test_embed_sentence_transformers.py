"""The sentence-transformers adapter with the real all-MiniLM-L6-v2 (offline)."""

from __future__ import annotations

import numpy as np
import pytest

from omniret import Item, ItemError
from omniret.embed import Embedder, load_embedder


@pytest.fixture(scope="module")
def minilm(minilm_path):
    return load_embedder(str(minilm_path))


def test_paraphrases_are_closer_than_unrelated(minilm):
    assert isinstance(minilm, Embedder)
    v = minilm.embed(["A man is playing a guitar.", "Someone strums a guitar.", "The stock market fell today."])
    assert v.dtype == np.float32 and v.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


def test_registry_alias_loads_the_same_model(minilm):
    other = load_embedder("minilm")
    np.testing.assert_allclose(other.embed(["hello"]), minilm.embed(["hello"]), atol=1e-6)


def test_image_is_refused_but_good_items_survive(minilm):
    with pytest.raises(ItemError, match=r"item 1 id='pic': .*cannot embed image"):
        minilm.embed(["fine", Item(image="cat.png", id="pic")])
    res = minilm.embed_partial(["fine", Item(image="cat.png", id="pic"), "also fine"])
    assert res.indices == [0, 2] and res.vectors.shape == (2, 384)
    assert res.failures[0].index == 1 and res.failures[0].id == "pic"
    np.testing.assert_allclose(res.vectors[1], minilm.embed(["also fine"])[0], atol=1e-6)


def test_empty_text_is_an_error(minilm):
    with pytest.raises(ItemError, match="item 0: empty text"):
        minilm.embed(["   "])


def test_unsupported_dim_is_a_clear_error(minilm):
    with pytest.raises(ValueError, match="does not support dim=128"):
        minilm.embed(["x"], dim=128)


def test_symmetric_model_ignores_query_instruction(minilm):
    # MiniLM's config declares empty prompts; an instruction must not be glued onto its queries.
    q = "How do I bake bread?"
    np.testing.assert_allclose(minilm.embed([q], instruction="Given a question, find the recipe"),
                               minilm.embed([q]), atol=1e-6)


def test_embed_chunks_pipelines_and_matches_embed_partial(minilm):
    chunks = [["one", "two"], ["three", Item(image="x.png", id="bad")], [], ["four"]]
    results = list(minilm.embed_chunks(chunks))
    assert [r.indices for r in results] == [[0, 1], [0], [], [0]]
    assert results[1].failures[0].id == "bad" and results[2].vectors.shape == (0, 384)
    flat = np.concatenate([r.vectors for r in results])
    np.testing.assert_allclose(flat, minilm.embed(["one", "two", "three", "four"]), atol=1e-6)
