"""The training recipe: anchored reranker, validation with best-checkpoint keeping, pairs-only defaults.

Real MiniLM, real sentence-transformers trainers, real checkpoints reloaded through ``load_reranker`` /
``load_embedder``. The generated task is easy on purpose: each query's distractor repeats the question unanswered
(so the retriever ranks it first), which a cross-encoder learns to push down in a few steps.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from omniret.cli import app
from omniret.embed import load_embedder
from omniret.errors import ConfigError
from omniret.rerank import load_reranker
from omniret.training.config import load_config
from omniret.training.data import TrainExample, item_key, load_examples
from omniret.training.losses import DistillationLoss
from omniret.training.negatives import choose_negatives, sampled_negatives
from omniret.training.runner import teacher_logits, teacher_temperature, train
from omniret.training.validation import (
    FirstStage,
    KeepBest,
    ValidationSet,
    held_out,
    min_delta_for,
    reranker_metrics,
    split_examples,
)
from omniret.types import Item

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "grey", "brown", "pink", "gold"]
ANIMALS = ["fox", "whale", "owl", "frog", "horse", "tiger", "rabbit", "eagle", "shark", "bear", "lizard", "goat",
           "camel", "otter", "crow", "moth"]
PLACES = ["forest", "ocean", "desert", "marsh", "mountains", "river", "meadow", "jungle", "cave", "tundra"]


def easy_task(seed: int = 0) -> list[dict]:
    """One line per (colour, animal): the positive says where it lives; the negative repeats the question
    unanswered, which MiniLM ranks above the positive (cosine 0.92 vs 0.83)."""
    rng = random.Random(seed)
    pairs = [(c, a) for c in COLOURS for a in ANIMALS]
    rng.shuffle(pairs)
    rows = []
    for c, a in pairs:
        place = rng.choice(PLACES)
        rows.append({"query": f"where does the {c} {a} live",
                     "positive": f"habitat of the {c} {a}: the {place}",
                     "negatives": [f"where does the {c} {a} live? unanswered"]})
    return rows


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def easy_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("easy")
    rows = easy_task()
    return _write(d / "train.jsonl", rows[:48]), _write(d / "val.jsonl", rows[150:166])


def _pairwise_accuracy(scores: list[tuple[float, float]]) -> float:
    return sum(p > n for p, n in scores) / len(scores)


def test_anchored_reranker_starts_at_the_first_stage_and_beats_it(minilm_path: Path, easy_files: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:
    train_file, val_file = easy_files
    cfg = load_config(stage="rerank", model=str(minilm_path), data=train_file, out=tmp_path / "rr", epochs=2,
                      batch_size=16, max_length=32, eval_data=val_file, eval_steps=3, eval_depth=4,
                      rerank_candidates=3, device="cpu")
    lines: list[str] = []
    summary = train(cfg, log=lines.append)
    v = summary["validation"]
    assert summary["recipe"] == "anchored"
    # before training the anchored reranker orders every list exactly as the retriever does
    assert v["before"] == pytest.approx(v["first_stage"])
    assert v["best"]["ndcg@10"] > v["first_stage"]["ndcg@10"] + 0.1
    assert v["beats_first_stage"] is True
    assert any("beats the first stage" in line for line in lines)
    # the saved reranker reloads and prefers the positive over the echo on held-out pairs
    rr = load_reranker(tmp_path / "rr", device="cpu")
    emb = load_embedder(minilm_path, device="cpu")
    held = load_examples(val_file)
    first, reranked = [], []
    for ex in held:
        s = rr.score(ex.query, [ex.positive, ex.negatives[0]])
        reranked.append((float(s[0]), float(s[1])))
        q, p, n = emb.embed([ex.query, ex.positive, ex.negatives[0]])
        first.append((float(q @ p), float(q @ n)))
    # MiniLM puts the unanswered echo first on every held-out query; 6 steps already turn most around
    assert _pairwise_accuracy(first) < 0.2
    assert _pairwise_accuracy(reranked) > _pairwise_accuracy(first) + 0.4
    assert all(0.0 <= x <= 1.0 for pair in reranked for x in pair)


def test_validation_keeps_the_earlier_weights_when_training_hurts(minilm_path: Path, easy_files: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    train_file, val_file = easy_files
    # a learning rate that wrecks MiniLM in a few steps: the best validation is the untouched model
    cfg = load_config(stage="embed", model=str(minilm_path), data=train_file, out=tmp_path / "bad", max_steps=4,
                      batch_size=16, lr=5e-2, warmup_ratio=0.0, max_length=48, eval_data=val_file, eval_steps=2,
                      device="cpu")
    summary = train(cfg, log=lambda _m: None)
    v = summary["validation"]
    assert [h["step"] for h in v["history"]] == [0, 2, 4]
    assert v["best_step"] == 0 and v["last"]["ndcg@10"] < v["before"]["ndcg@10"]
    texts = ["the red fox lives in the forest", "where does the blue whale live"]
    saved = load_embedder(tmp_path / "bad", device="cpu").embed(texts)
    original = load_embedder(minilm_path, device="cpu").embed(texts)
    np.testing.assert_allclose(saved, original, atol=1e-5)
    meta = json.loads((tmp_path / "bad" / "omniret.json").read_text())
    assert meta["trained"]["validation"]["best_step"] == 0


def test_keep_best_restores_the_best_state_and_stops_on_patience() -> None:
    layer = torch.nn.Linear(2, 1)
    figures = iter([0.5, 0.7, 0.6, 0.65, 0.9])
    weights: list[float] = []

    def evaluate() -> dict[str, float]:
        weights.append(float(layer.weight.detach()[0, 0]))
        x = next(figures)
        return {"ndcg@10": x, "mrr@10": x}

    keep = KeepBest(evaluate, layer.state_dict, layer.load_state_dict, patience=2)
    stops = []
    for step in range(4):
        with torch.no_grad():
            layer.weight.fill_(float(step))
        stops.append(keep.evaluate(step))
    assert stops == [False, False, False, True]             # two evaluations without improvement
    keep.restore()
    assert keep.best_step == 1 and float(layer.weight.detach()[0, 0]) == 1.0
    assert keep.report()["before"]["ndcg@10"] == 0.5
    with pytest.raises(ConfigError, match="validation metric 'recall@5'"):
        KeepBest(evaluate, layer.state_dict, layer.load_state_dict, metric="recall@5")


def test_keep_best_needs_more_than_min_delta_to_replace_the_untouched_weights() -> None:
    layer = torch.nn.Linear(2, 1)
    figures = iter([0.600, 0.6006, 0.590, 0.615])
    keep = KeepBest(lambda: {"ndcg@10": (x := next(figures)), "mrr@10": x}, layer.state_dict,
                    layer.load_state_dict, min_delta=0.002)
    for step in range(3):
        with torch.no_grad():
            layer.weight.fill_(float(step))
        keep.evaluate(step)
    keep.restore()
    # +0.0006 is noise under min_delta: the step-0 weights stay the best
    assert keep.best_step == 0 and float(layer.weight.detach()[0, 0]) == 0.0
    keep.evaluate(3)
    assert keep.best_step == 3


def test_pairs_only_data_trains_with_default_flags(minilm_path: Path, tmp_path: Path) -> None:
    rows = [{"query": r["query"], "positive": r["positive"]} for r in easy_task()[:24]]
    data = _write(tmp_path / "pairs.jsonl", rows)
    result = CliRunner().invoke(app, ["train", "embed", "--model", str(minilm_path), "--data", str(data),
                                      "--out", str(tmp_path / "emb"), "--max-steps", "1", "--batch-size", "8",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "in-batch negatives only" in result.output
    assert load_embedder(tmp_path / "emb", device="cpu").embed(["a red fox"]).shape == (1, 384)
    # a reranker from pairs only: the plain recipe samples other lines' positives as negatives
    result = CliRunner().invoke(app, ["train", "rerank", "--reranker", str(minilm_path), "--data", str(data),
                                      "--out", str(tmp_path / "ce"), "--max-steps", "1", "--batch-size", "8",
                                      "--init", "fresh", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "other lines' positives" in result.output


def test_choose_negatives_follows_the_data() -> None:
    pairs = [TrainExample(query=Item(text=f"q{i}"), positive=Item(text=f"p{i}")) for i in range(6)]
    mined = [TrainExample(query=Item(text=f"q{i}"), positive=Item(text=f"p{i}"), negatives=[Item(text="n")] * 2)
             for i in range(6)]

    def cfg(stage: str, **kw: object):  # noqa: ANN202
        return load_config(stage=stage, model="minilm", data=Path("x.jsonl"), out=Path("o"), **kw)

    assert choose_negatives(cfg("embed"), pairs)[0] == 0
    assert choose_negatives(cfg("embed"), mined) == (1, "the lines carry negatives: 1 hard negative per query "
                                                        "plus in-batch negatives")
    assert choose_negatives(cfg("embed", hard_negatives=2), mined)[0] == 2
    assert choose_negatives(cfg("distill"), mined)[0] == 2
    with pytest.raises(ConfigError, match="distillation needs negatives on every line"):
        choose_negatives(cfg("distill"), pairs)
    filled = sampled_negatives(pairs, 3)
    for ex in filled:
        assert len(ex.negatives) == 3 and all(n.texts != ex.positive.texts for n in ex.negatives)


def test_val_split_holds_out_whole_queries_and_rejects_bad_fractions() -> None:
    exs = [TrainExample(query=Item(text=f"q{i % 10}"), positive=Item(text=f"p{i}")) for i in range(30)]
    train_part, val_part = split_examples(exs, 0.2)
    assert {e.query.texts[0] for e in train_part}.isdisjoint({e.query.texts[0] for e in val_part})
    assert len({e.query.texts[0] for e in val_part}) == 2
    vs = ValidationSet.from_examples(val_part)
    # lines sharing a query are one validation query with every positive relevant
    assert len(vs) == 2 and sorted(len(r) for r in vs.relevant) == [3, 3]
    assert sorted(vs.pool[j].texts[0] for r in vs.relevant for j in r) == sorted(e.positive.texts[0] for e in val_part)
    with pytest.raises(ConfigError, match="cannot be split"):
        split_examples(exs[:1], 0.5)
    with pytest.raises(ConfigError, match="val_split: .*fraction between 0 and 1"):
        load_config(stage="embed", model="minilm", data=Path("x"), out=Path("o"), val_split=1.5)


def test_val_split_holds_out_a_check_split_that_chooses_nothing(minilm_path: Path, tmp_path: Path) -> None:
    """--val-split halves the held-out queries: validation picks the checkpoint, the check split (queries no
    choice saw) judges "beats the first stage"; both figures reach the summary and omniret.json."""
    rows = easy_task()[:40]
    data = _write(tmp_path / "train.jsonl", rows)
    held = held_out(None, 0.4, load_examples(data), 42)
    assert held.validation is not None and held.check is not None
    queries = [{item_key(q) for q in qs} for qs in ([ex.query for ex in held.train], held.validation.queries,
                                                    held.check.queries)]
    assert len(held.validation) == len(held.check) == 8 and len(held.train) == 24
    assert all(a.isdisjoint(b) for i, a in enumerate(queries) for b in queries[i + 1:])
    cfg = load_config(stage="rerank", model=str(minilm_path), data=data, out=tmp_path / "rr", max_steps=2,
                      batch_size=12, max_length=32, val_split=0.4, eval_depth=4, rerank_candidates=3, device="cpu")
    lines: list[str] = []
    v = train(cfg, log=lines.append)["validation"]
    check = v["check"]
    assert check["queries"] == 8 and set(check) >= {"reranker", "first_stage", "beats_first_stage"}
    # the check figure is the saved reranker on the check queries, recomputed here from scratch
    rr = load_reranker(tmp_path / "rr", device="cpu")
    first = FirstStage.of(held.check, lambda items, _i: load_embedder(minilm_path, device="cpu").embed(list(items)),
                          depth=4)
    assert check["first_stage"] == pytest.approx(first.metrics)
    assert check["reranker"] == pytest.approx(reranker_metrics(held.check, first,
                                                               lambda q, docs, _i: rr.score(q, list(docs))))
    assert any(line.startswith("check split (8 queries no choice saw)") for line in lines)
    assert any(f"replaces the best only by more than {min_delta_for(8):.4f}" in line for line in lines)
    meta = json.loads((tmp_path / "rr" / "omniret.json").read_text())
    assert meta["trained"]["validation"]["check"]["reranker"] == pytest.approx(check["reranker"])
    assert "best" in meta["trained"]["validation"]


def test_eval_min_delta_defaults_to_one_query_moving_one_rank() -> None:
    cfg = load_config(stage="rerank", model="minilm", data=Path("x"), out=Path("o"))
    assert cfg.eval_min_delta is None  # resolved from the validation set's size when training starts
    # one of 40 queries whose relevant document drops from rank 1 to 2 moves nDCG@10 by 0.369 / 40
    assert min_delta_for(40) == pytest.approx((1 - 1 / np.log2(3)) / 40) and min_delta_for(40, "mrr@10") == 0.5 / 40
    layer = torch.nn.Linear(2, 1)
    figures = iter([0.600, 0.6006, 0.615])
    keep = KeepBest(lambda: {"ndcg@10": (x := next(figures)), "mrr@10": x}, layer.state_dict,
                    layer.load_state_dict, min_delta=min_delta_for(40))
    assert [keep.evaluate(step) or keep.best_step for step in range(3)] == [0, 0, 2]  # +0.0006 is noise, +0.015 not


def test_an_anchored_teacher_is_distilled_on_the_students_scale(minilm_path: Path, easy_files: tuple[Path, Path],
                                                                tmp_path: Path) -> None:
    train_file, _ = easy_files
    # zero training steps: the teacher is the student's similarity plus a correction of zero
    cfg = load_config(stage="rerank", model=str(minilm_path), data=train_file, out=tmp_path / "rr", epochs=0,
                      batch_size=16, max_length=32, rerank_candidates=3, device="cpu")
    train(cfg, log=lambda _m: None)
    teacher = load_reranker(tmp_path / "rr", device="cpu")
    dcfg = load_config(stage="distill", model=str(minilm_path), teacher=str(tmp_path / "rr"), data=train_file,
                       out=tmp_path / "d")
    said: list[str] = []
    t = teacher_temperature(dcfg, teacher, said.append)
    assert t == pytest.approx(teacher.scale * dcfg.student_temperature)
    assert "anchored teacher" in said[0]
    examples = load_examples(train_file)[:16]
    logits = torch.tensor(teacher_logits(teacher, examples, 1))
    emb = load_embedder(minilm_path, device="cpu")
    q = torch.tensor(emb.embed([ex.query for ex in examples]))
    c = torch.tensor(np.stack([emb.embed(ex.candidates[:2]) for ex in examples]))
    # on the student's scale the teacher IS the student: nothing to distil, nothing to lose
    assert float(DistillationLoss(t, dcfg.student_temperature)(q, c, logits)) < 1e-4
    # at temperature 1 its softer scale alone would pull the student's similarities together
    assert float(DistillationLoss(1.0, dcfg.student_temperature)(q, c, logits)) > 0.01
    assert teacher_temperature(dcfg.model_copy(update={"teacher_temperature": 2.0}), teacher, said.append) == 2.0


def _colour_pictures(root: Path, shades: dict[str, int], seed: int = 0) -> dict[str, list[str]]:
    """Solid pictures of red and blue in random shades (hue, saturation and value jittered)."""
    import colorsys

    from PIL import Image

    rng = random.Random(seed)
    hues = {"red": 0.0, "blue": 0.62}
    files: dict[str, list[str]] = {}
    for name, n in shades.items():
        files[name] = []
        for k in range(n):
            r, g, b = colorsys.hsv_to_rgb((hues[name] + rng.uniform(-0.03, 0.03)) % 1.0, rng.uniform(0.5, 1.0),
                                          rng.uniform(0.5, 1.0))
            path = root / f"{name}-{k}.png"
            Image.new("RGB", (64, 64), (int(r * 255), int(g * 255), int(b * 255))).save(path)
            files[name].append(str(path))
    return files


def _pairwise(score: Callable[[Item, list[Item]], Any], examples: list[TrainExample]) -> float:
    """Share of held-out (query, positive, negative) triples whose positive scores higher."""
    wins = total = 0
    for ex in examples:
        s = np.asarray(score(ex.query, ex.candidates))
        wins += int((s[0] > s[1:]).sum())
        total += len(s) - 1
    return wins / total


def _first_stage(embedder: Path) -> Callable[[Item, list[Item]], np.ndarray]:
    emb = load_embedder(embedder, device="cpu")

    def score(query: Item, docs: list[Item]) -> np.ndarray:
        v = emb.embed([query, *docs])
        return v[1:] @ v[0]

    return score


def test_tiny_qwen3_vl_reranker_learns_colours_and_beats_the_first_stage(tiny_vl_reranker_soft: Path,
                                                                         tiny_vl_embedding: Path,
                                                                         tmp_path: Path) -> None:
    # colour words <-> pictures; held-out lines use shades never seen in training
    files = _colour_pictures(tmp_path, {"red": 14, "blue": 14})
    rows = {split: [{"query": f"a {c} picture", "positive": {"image": files[c][k]},
                     "negatives": [{"image": files[o][k]}]}
                    for c, o in (("red", "blue"), ("blue", "red")) for k in ks]
            for split, ks in (("train", range(12)), ("val", range(12, 14)))}
    train_file, val_file = _write(tmp_path / "train.jsonl", rows["train"]), _write(tmp_path / "val.jsonl", rows["val"])
    cfg = load_config(stage="rerank", model=str(tiny_vl_reranker_soft), data=train_file, out=tmp_path / "rr",
                      max_steps=60, batch_size=8, lr=3e-3, warmup_ratio=0.0, rerank_loss="listwise", eval_data=val_file,
                      retriever=str(tiny_vl_embedding), eval_steps=20, device="cpu")
    summary = train(cfg, log=lambda _m: None)
    assert summary["validation"]["beats_first_stage"] is True
    held = load_examples(val_file)
    rr = load_reranker(tmp_path / "rr", device="cpu")
    first, reranked = _pairwise(_first_stage(tiny_vl_embedding), held), _pairwise(rr.score, held)
    assert reranked >= 0.9 and reranked > first


def test_tiny_qwen3_vl_reranker_learns_the_easy_text_task(tiny_vl_reranker_soft: Path, tiny_vl_embedding: Path,
                                                          easy_files: tuple[Path, Path], tmp_path: Path) -> None:
    train_file, val_file = easy_files
    cfg = load_config(stage="rerank", model=str(tiny_vl_reranker_soft), data=train_file, out=tmp_path / "rr",
                      max_steps=20, batch_size=8, lr=3e-3, warmup_ratio=0.0, rerank_loss="listwise",
                      eval_data=val_file, retriever=str(tiny_vl_embedding), eval_steps=10, device="cpu")
    summary = train(cfg, log=lambda _m: None)
    v = summary["validation"]
    assert v["beats_first_stage"] is True and v["best"]["ndcg@10"] > v["first_stage"]["ndcg@10"] + 0.1
    held = load_examples(val_file)
    rr = load_reranker(tmp_path / "rr", device="cpu")
    assert _pairwise(rr.score, held) >= max(_pairwise(_first_stage(tiny_vl_embedding), held), 0.9)
