"""The sentence-transformers CrossEncoder adapter, on a cross-encoder trained here from MiniLM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from omniret import Item
from omniret.errors import ItemError, ModelLoadError
from omniret.rerank import Reranker, load_reranker

PAIRS = [
    ("how do cats sleep", "Cats sleep up to sixteen hours a day, curled up in warm places.", 1.0),
    ("how do cats sleep", "The central bank raised interest rates again this quarter.", 0.0),
    ("what is the capital of france", "Paris is the capital and largest city of France.", 1.0),
    ("what is the capital of france", "Photosynthesis turns light into chemical energy in plants.", 0.0),
]


@pytest.fixture(scope="module")
def trained_cross_encoder(minilm_path, tmp_path_factory) -> Path:
    """MiniLM with a fresh one-label head, trained for a few steps on ``PAIRS``, saved as a CrossEncoder."""
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    ce = CrossEncoder(str(minilm_path), num_labels=1, device="cpu")
    model, tok = ce.model, ce.tokenizer
    # train only the fresh head on MiniLM's pooled features: a few hundred cheap steps, no encoder backward
    feats = tok([q for q, _, _ in PAIRS], [d for _, d, _ in PAIRS], padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = model.bert(**feats).pooler_output
    labels = torch.tensor([y for _, _, y in PAIRS])
    opt = torch.optim.AdamW(model.classifier.parameters(), lr=0.05)
    for _ in range(200):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model.classifier(pooled)[:, 0], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    out = tmp_path_factory.mktemp("ce") / "tiny-cross-encoder"
    ce.save(str(out))
    return out


def test_trained_cross_encoder_ranks_its_training_pairs(trained_cross_encoder):
    import torch
    from sentence_transformers import CrossEncoder

    rr = load_reranker(trained_cross_encoder)
    assert isinstance(rr, Reranker) and rr.modalities == frozenset({"text"})
    for query in ("how do cats sleep", "what is the capital of france"):
        docs = [d for q, d, _ in PAIRS if q == query]
        labels = [y for q, _, y in PAIRS if q == query]
        scores = rr.score(query, docs)
        assert scores.dtype == np.float32 and ((scores > 0) & (scores < 1)).all()
        assert scores[labels.index(1.0)] > 0.5 > scores[labels.index(0.0)]
        assert rr.rerank(query, docs).indices[0] == labels.index(1.0)
        # sigmoid of ST's raw logits, whatever activation the checkpoint saved
        raw = CrossEncoder(str(trained_cross_encoder)).predict([(query, d) for d in docs],
                                                                activation_fn=torch.nn.Identity())
        np.testing.assert_allclose(scores, 1 / (1 + np.exp(-raw)), atol=1e-5)


def test_text_only_and_bi_encoders_refused(trained_cross_encoder, minilm_path, tmp_path):
    rr = load_reranker(trained_cross_encoder)
    with pytest.raises(ItemError, match=r"item 0 id='img': model .* cannot read image"):
        rr.score("q", [Item(image=str(tmp_path / "a.png"), id="img"), "text"])
    assert rr.score("q", []).shape == (0,)
    with pytest.raises(ModelLoadError, match="is a sentence-transformers embedding model, not a CrossEncoder"):
        load_reranker(minilm_path)
