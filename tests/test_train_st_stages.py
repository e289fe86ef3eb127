"""Hard-negative mining, the CrossEncoder reranker stage and distillation, on real MiniLM and a tiny Qwen3 reranker."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from omniret.cli import app
from omniret.embed import load_embedder
from omniret.errors import ConfigError
from omniret.rerank import load_reranker
from omniret.training.config import load_config
from omniret.training.data import TrainExample, load_examples
from omniret.training.mining import mine_hard_negatives
from omniret.training.runner import train
from omniret.types import Item

TOPICS = {
    "a large body of salt water": "ocean, sea: the ship crossed the ocean",
    "a domesticated animal that barks": "dog, hound: the dog barked at the mailman",
    "a musical instrument with strings played with a bow": "violin, fiddle: she played the violin",
    "a machine that converts fuel into motion": "engine, motor: the engine roared",
}
DISTRACTORS = ["cat, kitten: the cat purred", "lake, pond: ducks swam on the lake", "cello: a deep bowed string",
               "car, automobile: he drove the car", "river, stream: the river flooded", "piano: keys and hammers",
               "wolf: the wolf howled at night", "turbine: steam turns the turbine"]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def corpus() -> list[Item]:
    return [Item(text=t, id=f"d{i}") for i, t in enumerate([*TOPICS.values(), *DISTRACTORS])]


@pytest.fixture
def examples() -> list[TrainExample]:
    return [TrainExample(query=Item(text=q), positive=Item(text=d)) for q, d in TOPICS.items()]


def test_mining_skips_positives_and_ranks_by_the_embedder(minilm_path: Path, corpus: list[Item],
                                                          examples: list[TrainExample]) -> None:
    emb = load_embedder(minilm_path, device="cpu")
    mined = mine_hard_negatives(examples, corpus, emb, num_negatives=3, candidates=10)
    dv = emb.embed(corpus)
    for ex, m in zip(examples, mined, strict=True):
        assert len(m.negatives) == 3 and m.positive.texts == ex.positive.texts
        neg_texts = [n.texts[0] for n in m.negatives]
        assert ex.positive.texts[0] not in neg_texts
        sims = dv @ emb.embed([ex.query])[0]
        expected = [corpus[j].texts[0] for j in np.argsort(-sims) if corpus[j].texts != ex.positive.texts][:3]
        assert neg_texts == expected                      # the top non-positive hits, best first
    skipped = mine_hard_negatives(examples, corpus, emb, num_negatives=2, candidates=10, skip_top=1)
    assert [n.texts for n in skipped[0].negatives] == [n.texts for n in mined[0].negatives[1:3]]
    with pytest.raises(ConfigError, match="pass --reranker too"):
        mine_hard_negatives(examples, corpus, emb, max_score=0.5)


def test_mining_reranker_filter_drops_high_scoring_candidates(minilm_path: Path, tiny_text_reranker: Path,
                                                              corpus: list[Item],
                                                              examples: list[TrainExample]) -> None:
    emb = load_embedder(minilm_path, device="cpu")
    rr = load_reranker(tiny_text_reranker, device="cpu")
    ex = examples[:2]
    plain = mine_hard_negatives(ex, corpus, emb, num_negatives=11, candidates=11)   # every non-positive doc
    assert all(len(m.negatives) == 11 for m in plain)
    scores = [rr.score(e.query, m.negatives) for e, m in zip(ex, plain, strict=True)]
    ranked = np.sort(np.concatenate(scores))
    cut = float(ranked[len(ranked) // 2 - 1] + ranked[len(ranked) // 2]) / 2    # between two scores: no ties
    filtered = mine_hard_negatives(ex, corpus, emb, num_negatives=11, candidates=11, reranker=rr, max_score=cut)
    for m, f, s in zip(plain, filtered, scores, strict=True):
        kept = [n.texts for n, v in zip(m.negatives, s, strict=True) if v <= cut]
        assert [n.texts for n in f.negatives] == kept and len(kept) < len(m.negatives)


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    docs = list(TOPICS.values())
    rows = [{"query": q, "positive": d, "negatives": [docs[(i + 1) % 4], DISTRACTORS[i]]}
            for i, (q, d) in enumerate(TOPICS.items())]
    return _write(tmp_path / "train.jsonl", rows)


def test_cross_encoder_rerank_stage_from_the_cli(minilm_path: Path, tmp_path: Path) -> None:
    pairs = {"ocean water": "ocean: salt water covers the ocean", "dog barks": "dog: the dog barks at night",
             "violin bow": "violin: played with a bow", "engine fuel": "engine: burns fuel to move"}
    docs = list(pairs.values())
    data = _write(tmp_path / "pairs.jsonl", [{"query": q, "positive": d, "negatives": [docs[(i + 1) % 4],
                                                                                       docs[(i + 2) % 4]]}
                                             for i, (q, d) in enumerate(pairs.items())])
    config = tmp_path / "train.yaml"
    config.write_text("warmup_ratio: 0.0\nrerank_loss: listwise\nepochs: 3\n", encoding="utf-8")
    out = tmp_path / "ce"
    res = CliRunner().invoke(app, ["train", "rerank", "--config", str(config), "--reranker", str(minilm_path),
                                   "--data", str(data), "--out", str(out), "--epochs", "8", "--batch-size", "4",
                                   "--lr", "2e-4", "--hard-negatives", "2", "--device", "cpu", "--max-length", "32",
                                   "--init", "fresh",    # the plain recipe: MiniLM body + a new head
                                   "--save-steps", "3", "--save-total-limit", "1"])
    assert res.exit_code == 0, res.output
    assert "trained rerank: 8 steps" in res.output                 # the flag overrode the file's epochs
    # --save-total-limit reaches sentence-transformers' trainer too: of checkpoints 3, 6, 8 the newest is kept
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-8"]
    rr = load_reranker(out, device="cpu")
    for ex in load_examples(data):
        s = rr.score(ex.query, ex.candidates)
        assert s[0] > max(s[1:]), (ex.query, s)           # the positive first for every training query
    meta = json.loads((out / "omniret.json").read_text())
    assert meta["trained"]["stage"] == "rerank" and "base_model" not in meta
    assert meta["trained"]["losses"]["CrossEncoderRerankerLoss"]["mode"] == "listwise"


def test_distillation_from_a_teacher_reranker(minilm_path: Path, tiny_text_reranker: Path, pairs_file: Path,
                                              tmp_path: Path) -> None:
    cfg = load_config(stage="distill", model=str(minilm_path), teacher=str(tiny_text_reranker), data=pairs_file,
                      out=tmp_path / "api", max_steps=5, batch_size=4, lr=1e-4, warmup_ratio=0.0,
                      hard_negatives=2, log_steps=1, device="cpu")
    losses = [h["loss"] for h in train(cfg)["history"]]
    assert len(losses) == 5 and losses[-1] < losses[0]
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["train", "distill", "--model", str(minilm_path), "--teacher",
                                   str(tiny_text_reranker), "--data", str(pairs_file), "--out", str(out),
                                   "--max-steps", "2", "--batch-size", "4", "--hard-negatives", "2",
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    emb = load_embedder(out, device="cpu")
    v = emb.embed(["a dog"])
    assert v.shape == (1, 384) and abs(float(np.linalg.norm(v)) - 1) < 1e-5
    assert json.loads((out / "omniret.json").read_text())["trained"]["stage"] == "distill"


def _listwise_batch() -> list[list[str]]:
    queries = list(TOPICS)
    columns = [list(TOPICS.values())] + [[DISTRACTORS[(i + j) % len(DISTRACTORS)] for i in range(len(queries))]
                                         for j in range(3)]
    return [queries, *columns]


def test_chunked_listwise_scoring_equals_one_forward(minilm_path: Path) -> None:
    """GradCache over pair chunks gives the unchunked step's loss and gradients (dropout replayed too)."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    from omniret.training.losses import RerankerLoss
    from omniret.training.st_trainer import PAIR_CHUNK, candidate_scores, listwise_loss, read_length

    model = CrossEncoder(str(minilm_path), num_labels=1, device="cpu", max_length=read_length(str(minilm_path)))
    assert read_length(str(minilm_path)) == model.max_seq_length == 256  # what MiniLM reads, not 512
    inputs = _listwise_batch()                                             # 4 queries x 4 candidates = 16 pairs
    loss_of = RerankerLoss("listwise")
    params = [p for p in model.parameters() if p.requires_grad]

    def step(run: Callable[[], torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
        model.zero_grad()
        torch.manual_seed(0)
        loss = run()
        (loss * 0.5).backward()  # an outer scale (gradient accumulation) reaches every chunk
        return float(loss.detach()), [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    def close(a: tuple[float, list[torch.Tensor]], b: tuple[float, list[torch.Tensor]]) -> bool:
        return abs(a[0] - b[0]) < 1e-5 and max(float((x - y).abs().max()) for x, y in zip(a[1], b[1], strict=True)) < 1e-5

    model.eval()  # no dropout: one forward and chunked forwards see the same network
    whole = step(lambda: listwise_loss(model, inputs, loss_of, chunk=None))
    assert close(step(lambda: listwise_loss(model, inputs, loss_of, chunk=3)), whole)
    assert close(step(lambda: listwise_loss(model, inputs, loss_of, chunk=5)), whole)
    model.train()  # dropout on: the backward replay must draw the masks of the forward the loss came from
    plain = step(lambda: loss_of(candidate_scores(model, inputs, chunk=5)))  # the same forwards, graphs kept
    cached = step(lambda: listwise_loss(model, inputs, loss_of, chunk=5))
    assert close(cached, plain) and not close(cached, whole)
    model.gradient_checkpointing_enable()  # composes: checkpointing restores the replayed random state too
    assert model.model.is_activation_checkpointing
    assert close(step(lambda: listwise_loss(model, inputs, loss_of, chunk=5)), cached)
    assert PAIR_CHUNK < 8 * 16  # the default step (16 queries x 8 candidates) is chunked
