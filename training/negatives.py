"""What negatives a stage trains with when the flags do not say: the data decides.

Pairs-only lines (``{"query", "positive"}``) train an embedder with in-batch negatives and a reranker with
other lines' positives; lines that carry mined negatives use them. ``choose_negatives`` returns the choice
and a sentence saying it, which ``omniret train`` prints.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from omniret.errors import ConfigError
from omniret.training.config import TrainConfig
from omniret.training.data import TrainExample, item_key


def choose_negatives(cfg: TrainConfig, examples: Sequence[TrainExample]) -> tuple[int, str]:
    """How many hard negatives per line the stage uses, following the data unless ``--hard-negatives`` is
    given, and a sentence saying what was chosen (printed by the CLI)."""
    have = [len(ex.negatives) for ex in examples]
    least, without = min(have), sum(n == 0 for n in have)
    if cfg.hard_negatives is not None:
        return cfg.hard_negatives, f"{cfg.hard_negatives} hard negative(s) per line (--hard-negatives)"
    if cfg.stage == "distill":
        if least == 0:
            raise ConfigError(f"distillation needs negatives on every line ({without} of {len(examples)} have none); "
                              "mine them first (omniret mine)")
        return least, f"the teacher's softmax over the positive and {least} negative(s) per line"
    if cfg.stage == "rerank":
        if least == 0:
            return 3, (f"{without} of {len(examples)} lines have no negatives: 3 other lines' positives per query "
                       "as negatives (omniret mine gives harder ones)")
        k = min(least, 3)
        return k, f"{k} negative(s) per line from the data (the listwise softmax sees the positive and {k})"
    if least == 0:
        return 0, (f"{'no line has' if without == len(examples) else f'{without} of {len(examples)} lines have no'} "
                   "negatives: in-batch negatives only (omniret mine adds hard ones)")
    return 1, "the lines carry negatives: 1 hard negative per query plus in-batch negatives"


def sampled_negatives(examples: Sequence[TrainExample], k: int, seed: int = 42) -> list[TrainExample]:
    """Lines without negatives get ``k`` other lines' positives (never one equal to their own positive)."""
    positives = list({item_key(ex.positive): ex.positive for ex in examples}.items())
    if len(positives) <= k:
        raise ConfigError(f"{len(positives)} distinct positives cannot give each line {k} negatives; add negatives "
                          "to the data (omniret mine) or more lines")
    rng = random.Random(seed)
    out = []
    for ex in examples:
        if ex.negatives:
            out.append(ex)
            continue
        own = item_key(ex.positive)
        picked: list[Any] = []
        while len(picked) < k:
            key, item = positives[rng.randrange(len(positives))]
            if key != own and all(item is not p for p in picked):
                picked.append(item)
        out.append(TrainExample(query=ex.query, positive=ex.positive, negatives=picked, instruction=ex.instruction,
                                scores=None, id=ex.id))
    return out
