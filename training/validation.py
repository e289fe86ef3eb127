"""Validation during training: held-out queries ranked against a candidate pool, best weights kept.

Every stage evaluates before training and at intervals on held-out queries (``--eval-data FILE`` or a
``--val-split`` fraction of the training lines), keeps the weights of the best evaluation and puts them
back at the end, so a run that gets worse returns the earlier model (the untouched one when every step
hurt). The pool is every distinct positive and negative of the held-out lines; an embedder ranks the whole
pool, a reranker reorders the first stage's top ``depth`` candidates, and the first stage's own metrics on
those same candidates are the bar the reranker is reported against. Metrics are nDCG@10 and MRR@10 with
trec_eval semantics (``omniret.evaluation.metrics``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omniret.errors import ConfigError
from omniret.training.data import TrainExample, item_key, load_examples
from omniret.types import Item

#: the metrics every evaluation reports
METRICS = ("ndcg@10", "mrr@10")

#: ``encode(items, instruction) -> (n, d)`` L2-normalised vectors
Encode = Callable[[Sequence[Item], "str | None"], np.ndarray]
#: ``score(query, documents, instruction) -> (n,)`` relevance scores (higher is more relevant)
Score = Callable[[Item, Sequence[Item], "str | None"], np.ndarray]


@dataclass
class ValidationSet:
    """Held-out queries, the candidate pool they are ranked in, and each query's relevant pool entries."""

    queries: list[Item]
    instructions: list[str | None]
    pool: list[Item]
    relevant: list[list[int]]
    #: per query, the pool indices of its own line's candidates (positive, then negatives)
    lines: list[list[int]] = field(default_factory=list)

    @classmethod
    def from_examples(cls, examples: Sequence[TrainExample]) -> ValidationSet:
        """One query per distinct (query, instruction); lines that share a query pool their positives (all
        relevant). The pool holds each distinct positive and negative once (by content)."""
        if not examples:
            raise ConfigError("the validation set is empty")
        index: dict[str, int] = {}
        pool: list[Item] = []

        def at(item: Item) -> int:
            key = item_key(item)
            if key not in index:
                index[key] = len(pool)
                pool.append(item)
            return index[key]

        queries: dict[tuple[str, str | None], int] = {}
        out = cls([], [], pool, [], [])
        for ex in examples:
            qk = (item_key(ex.query), ex.instruction)
            if qk not in queries:
                queries[qk] = len(out.queries)
                out.queries.append(ex.query)
                out.instructions.append(ex.instruction)
                out.relevant.append([])
                out.lines.append([])
            i = queries[qk]
            p = at(ex.positive)
            if p not in out.relevant[i]:
                out.relevant[i].append(p)
            for j in (p, *(at(n) for n in ex.negatives)):
                if j not in out.lines[i]:
                    out.lines[i].append(j)
        return out

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def qrels(self) -> dict[str, dict[str, int]]:
        return {f"q{i}": {f"d{j}": 1 for j in rel} for i, rel in enumerate(self.relevant)}

    def query_vectors(self, encode: Encode, default_instruction: str | None = None) -> np.ndarray:
        """The queries' vectors, encoded once per distinct instruction."""
        out: np.ndarray | None = None
        groups: dict[str | None, list[int]] = {}
        for i, instr in enumerate(self.instructions):
            groups.setdefault(instr if instr is not None else default_instruction, []).append(i)
        for instr, idx in groups.items():
            vecs = encode([self.queries[i] for i in idx], instr)
            if out is None:
                out = np.zeros((len(self.queries), vecs.shape[1]), dtype=np.float32)
            out[idx] = vecs
        assert out is not None
        return out


def metrics_of(val: ValidationSet, ranking: Sequence[tuple[Sequence[int], Sequence[float]]]) -> dict[str, float]:
    """nDCG@10 and MRR@10 of one (pool indices, scores) list per query."""
    from omniret.evaluation.metrics import evaluate_run

    run = {f"q{i}": {f"d{int(j)}": float(s) for j, s in zip(idx, sc, strict=True)}
           for i, (idx, sc) in enumerate(ranking)}
    return evaluate_run(val.qrels, run, list(METRICS))


def split_examples(examples: Sequence[TrainExample], fraction: float,
                   seed: int = 42) -> tuple[list[TrainExample], list[TrainExample]]:
    """``(train, held out)``: about ``fraction`` of the distinct queries held out, every line of a query on
    the same side (a query seen in training would flatter the validation figure)."""
    groups: dict[str, list[TrainExample]] = {}
    for ex in examples:
        groups.setdefault(item_key(ex.query), []).append(ex)
    keys = list(groups)
    random.Random(seed).shuffle(keys)
    n_val = round(len(keys) * fraction)
    if n_val < 1 or n_val >= len(keys):
        raise ConfigError(f"--val-split {fraction}: {len(keys)} distinct queries cannot be split into a training "
                          "and a validation part; use a larger fraction or more data, or pass --eval-data")
    held = set(keys[:n_val])
    train = [ex for ex in examples if item_key(ex.query) not in held]
    val = [ex for ex in examples if item_key(ex.query) in held]
    return train, val


@dataclass
class HeldOut:
    """What a run holds out of training: the validation set that picks the checkpoint, and the check set
    that no choice saw, on which "the reranker beats the first stage" / "the teacher beats the student" is
    judged (judged on the choosing queries, the winner of the choice is flattered: a teacher read 0.979 on
    them and 0.889 on fresh queries)."""

    train: list[TrainExample]
    validation: ValidationSet | None = None
    check: ValidationSet | None = None


def held_out(eval_data: Any, val_split: float | None, examples: Sequence[TrainExample],
             seed: int = 42) -> HeldOut:
    """The training examples and the held-out sets a config asks for. ``--val-split`` holds out that
    fraction of the queries and halves it (by query): one half validates, the other checks; with fewer than
    two held-out queries there is no check set. ``--eval-data`` validates on that file and checks nothing."""
    if eval_data is not None and val_split is not None:
        raise ConfigError("pass --eval-data or --val-split, not both")
    if eval_data is not None:
        return HeldOut(list(examples), ValidationSet.from_examples(load_examples(eval_data)))
    if val_split is None:
        return HeldOut(list(examples))
    train, held = split_examples(examples, val_split, seed)
    if len({item_key(ex.query) for ex in held}) < 2:
        return HeldOut(train, ValidationSet.from_examples(held))
    val, check = split_examples(held, 0.5, seed + 1)
    return HeldOut(train, ValidationSet.from_examples(val), ValidationSet.from_examples(check))


def min_delta_for(queries: int, metric: str = "ndcg@10") -> float:
    """The default ``eval_min_delta`` for a validation set of ``queries`` queries: the change one query makes
    when its relevant document moves between ranks 1 and 2 (nDCG@10: ``(1 - 1/log2(3)) / n``; MRR@10:
    ``0.5 / n``). A smaller gain is at most one query reshuffled at the top — noise on a small set (on
    WordNet a 0.0006 gain on 40 queries picked a reranker below the first stage on test), while a real
    improvement moves several queries."""
    if queries <= 0:
        return 0.0
    step = 1.0 - 1.0 / math.log2(3.0) if metric == "ndcg@10" else 0.5
    return step / queries


def embedding_metrics(val: ValidationSet, encode: Encode, *, instruction: str | None = None,
                      depth: int = 100) -> dict[str, float]:
    """An embedder's metrics: every query ranks the whole pool by cosine similarity."""
    dv = encode(val.pool, None)
    qv = val.query_vectors(encode, instruction)
    sim = qv @ dv.T
    top = np.argsort(-sim, axis=1, kind="stable")[:, :depth]
    return metrics_of(val, [(row, sim[i, row]) for i, row in enumerate(top)])


@dataclass
class FirstStage:
    """The first stage's top ``depth`` pool indices and similarities per validation query, and its metrics."""

    candidates: list[np.ndarray]
    scores: list[np.ndarray]
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, val: ValidationSet, encode: Encode, *, instruction: str | None = None,
           depth: int = 20) -> FirstStage:
        dv = encode(val.pool, None)
        qv = val.query_vectors(encode, instruction)
        sim = qv @ dv.T
        top = np.argsort(-sim, axis=1, kind="stable")[:, :depth]
        cands = [row for row in top]
        scores = [sim[i, row] for i, row in enumerate(top)]
        return cls(cands, scores, metrics_of(val, list(zip(cands, scores, strict=True))))

    @classmethod
    def of_lines(cls, val: ValidationSet, seed: int = 42) -> FirstStage:
        """No retriever: each query's own line (positive and negatives) in a fixed shuffled order, and no
        first-stage metrics to compare against."""
        rng = random.Random(seed)
        cands = []
        for line in val.lines:
            order = list(line)
            rng.shuffle(order)
            cands.append(np.asarray(order, dtype=np.int64))
        return cls(cands, [np.zeros(len(c)) for c in cands], {})


def reranker_metrics(val: ValidationSet, first: FirstStage, score: Score, *,
                     instruction: str | None = None) -> dict[str, float]:
    """A reranker's metrics: each query's first-stage candidates reordered by ``score``."""
    ranking = []
    for i, cand in enumerate(first.candidates):
        instr = val.instructions[i] if val.instructions[i] is not None else instruction
        s = np.asarray(score(val.queries[i], [val.pool[j] for j in cand], instr), dtype=np.float64)
        ranking.append((cand, s))
    return metrics_of(val, ranking)


State = dict[str, Any]


class KeepBest:
    """Evaluates on a schedule, keeps a CPU copy of the best weights, and puts them back at the end.

    ``evaluate()`` gives the metrics of the weights in memory; ``get_state``/``set_state`` read and write
    them (only the trainable ones for LoRA). ``patience`` stops a run after that many evaluations without
    improvement. An evaluation counts as an improvement only when it beats the best so far by more than
    ``min_delta``, so noise on a small validation set does not replace the untouched weights (for a
    reranker: the first stage's order) with ones that are no better. ``log`` receives one line per
    evaluation.
    """

    def __init__(self, evaluate: Callable[[], dict[str, float]], get_state: Callable[[], State],
                 set_state: Callable[[State], object], *, metric: str = "ndcg@10", patience: int | None = None,
                 min_delta: float | None = 0.0, log: Callable[[str], None] | None = None) -> None:
        if metric not in METRICS:
            raise ConfigError(f"validation metric {metric!r}; use one of {list(METRICS)}")
        self._evaluate = evaluate
        self._get_state = get_state
        self._set_state = set_state
        self.metric = metric
        self.patience = patience
        self.min_delta = float(min_delta or 0.0)
        self._log = log
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, float] | None = None
        self.best_step = -1
        self._best_state: State | None = None
        self._since_best = 0

    def evaluate(self, step: int) -> bool:
        """Evaluate at ``step``; True when patience ran out (the caller should stop training)."""
        m = self._evaluate()
        self.history.append({"step": step, **m})
        improved = self.best is None or m[self.metric] > self.best[self.metric] + self.min_delta
        if improved:
            self.best, self.best_step = m, step
            self._best_state = {k: v.detach().to("cpu", copy=True) if hasattr(v, "detach") else v
                                for k, v in self._get_state().items()}
            self._since_best = 0
        else:
            self._since_best += 1
        if self._log is not None:
            mark = " (best)" if improved else ""
            self._log(f"validation step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()) + mark)
        return self.patience is not None and self._since_best >= self.patience

    @property
    def evaluated_steps(self) -> set[int]:
        return {int(h["step"]) for h in self.history}

    def restore(self) -> None:
        """Put the best weights back when the last evaluation was not the best."""
        if self._best_state is not None and self.history and self.history[-1]["step"] != self.best_step:
            self._set_state(self._best_state)

    def report(self) -> dict[str, Any]:
        """``before`` (step 0), ``best`` with its step, ``last`` and the full history."""
        if not self.history:
            return {}
        return {"metric": self.metric, "before": {k: v for k, v in self.history[0].items() if k != "step"},
                "best": self.best, "best_step": self.best_step,
                "last": {k: v for k, v in self.history[-1].items() if k != "step"}, "history": self.history}


def module_state(module: Any) -> tuple[Callable[[], State], Callable[[State], object]]:
    """``(get_state, set_state)`` of a torch module for ``KeepBest``; ``ConfigError`` when there is none."""
    if module is None:
        raise ConfigError("the model has no torch module to keep the best weights of")
    return module.state_dict, module.load_state_dict


def eval_interval(cfg_steps: int | None, total_steps: int) -> int:
    """Steps between evaluations: the configured value, else four evaluations over the run."""
    if cfg_steps is not None:
        return cfg_steps
    return max(1, -(-total_steps // 4))


def hf_callback(keep: KeepBest, interval: int) -> Any:
    """A transformers ``TrainerCallback`` (sentence-transformers trainers) that runs ``keep``: an evaluation
    before the first step, every ``interval`` steps and after the last, early stopping, the best weights
    restored when training ends."""
    from transformers import TrainerCallback

    class ValidationCallback(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step not in keep.evaluated_steps:
                keep.evaluate(int(state.global_step))

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step % interval == 0 and keep.evaluate(int(state.global_step)):
                control.should_training_stop = True

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step not in keep.evaluated_steps:
                keep.evaluate(int(state.global_step))
            keep.restore()

    return ValidationCallback()
