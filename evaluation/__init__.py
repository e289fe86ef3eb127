"""Evaluation runners: MTEB, BEIR-format, MMEB-style; metrics, sweeps and reports.

- ``metrics``: nDCG@k, Recall@k, MRR@k, MAP, Hit@k, Precision@k with trec_eval semantics.
- ``beir``: local BEIR-format folders; ``mmeb``: MMEB-style multimodal folders; both go through
  ``sweeps.evaluate_retrieval`` (first stage in an omniret vector store, optional rerank, dims sweep).
- ``mteb_runner``: omniret embedders as mteb encoders, local mteb tasks, results in mteb's format.
- ``reports``: ``results.json`` (``{"runs": [...]}``), ``report.md`` and ``plot.png``.

Submodules load on first use, so importing this package pulls in neither torch nor mteb.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "evaluate_run": "omniret.evaluation.metrics",
    "RunResult": "omniret.evaluation.reports",
    "write_report": "omniret.evaluation.reports",
    "load_results": "omniret.evaluation.reports",
    "SweepConfig": "omniret.evaluation.sweeps",
    "evaluate_retrieval": "omniret.evaluation.sweeps",
    "run_beir": "omniret.evaluation.beir",
    "load_beir": "omniret.evaluation.beir",
    "run_mmeb": "omniret.evaluation.mmeb",
    "load_mmeb": "omniret.evaluation.mmeb",
    "run_mteb": "omniret.evaluation.mteb_runner",
    "make_encoder": "omniret.evaluation.mteb_runner",
    "local_retrieval_task": "omniret.evaluation.mteb_runner",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'omniret.evaluation' has no attribute {name!r}")
