"""Evaluation reports: ``results.json``, a Markdown table and a PNG plot of score against dim.

``DIR/results.json`` always has one shape, a sweep or not, so scripts can compare any two runs::

    {"runs": [{"dataset": str, "split": str, "model": str, "reranker": str | null,
               "metrics": {"ndcg@10": float, "recall@100": float, "mrr@10": float, ...},
               "settings": {"dim": int, "rerank_top": int, "backend": str, "index": str, "k": int, ...},
               "timings": {"embed_corpus_s": float, "search_ms_per_query": float, ...}}, ...],
     "main_metric": str}

Each entry is one setting of the sweep (one dim x one rerank depth; ``rerank_top`` 0 is the first stage
alone).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
PLOT_FILE = "plot.png"


@dataclass
class RunResult:
    """One evaluated setting: what was run on what, its scores and its timings."""

    dataset: str
    split: str
    model: str
    reranker: str | None
    metrics: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        return cls(dataset=d["dataset"], split=d["split"], model=d["model"], reranker=d.get("reranker"),
                   metrics=dict(d["metrics"]), settings=dict(d.get("settings", {})),
                   timings=dict(d.get("timings", {})))


def load_results(path: str | Path) -> list[RunResult]:
    """Read a ``results.json`` (or the folder holding one) back into runs."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    data = json.loads(p.read_text(encoding="utf-8"))
    return [RunResult.from_dict(r) for r in data["runs"]]


def write_report(out_dir: str | Path, runs: Sequence[RunResult], *, main_metric: str | None = None,
                 title: str | None = None, command: str | None = None) -> dict[str, Path]:
    """Write ``results.json``, ``report.md`` and (for runs with a ``dim`` setting) ``plot.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = list(runs)
    metric = main_metric or (next(iter(runs[0].metrics)) if runs and runs[0].metrics else "")
    payload: dict[str, Any] = {"runs": [r.to_dict() for r in runs], "main_metric": metric}
    if command:
        payload["command"] = command
    paths = {"results": out / RESULTS_FILE, "report": out / REPORT_FILE}
    paths["results"].write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    paths["report"].write_text(markdown_report(runs, title=title, command=command), encoding="utf-8")
    if runs and any("dim" in r.settings for r in runs):
        paths["plot"] = plot_dims(runs, out / PLOT_FILE, metric=metric, title=title)
    return paths


def metric_columns(runs: Sequence[RunResult]) -> list[str]:
    cols: list[str] = []
    for r in runs:
        cols.extend(m for m in r.metrics if m not in cols)
    return cols


def timing_columns(runs: Sequence[RunResult]) -> list[str]:
    cols: list[str] = []
    for r in runs:
        cols.extend(t for t in r.timings if t not in cols)
    return cols


#: settings shown as table columns, in this order, when any run has them
SETTING_COLUMNS = ("task", "dim", "mode", "fusion", "alpha", "rerank_top", "backend", "index")


def table_rows(runs: Sequence[RunResult]) -> tuple[list[str], list[list[str]]]:
    """Header and rows shared by the Markdown report and the CLI's rich table."""
    settings = [s for s in SETTING_COLUMNS if any(s in r.settings for r in runs)]
    metrics = metric_columns(runs)
    timings = timing_columns(runs)
    header = [*settings, *metrics, *timings]
    rows = []
    for r in runs:
        row = [_fmt(r.settings.get(s, "")) for s in settings]
        row += [_fmt(r.metrics.get(m)) for m in metrics]
        row += [_fmt(r.timings.get(t)) for t in timings]
        rows.append(row)
    return header, rows


def markdown_report(runs: Sequence[RunResult], *, title: str | None = None, command: str | None = None) -> str:
    """A Markdown page: what was run, then one table row per setting."""
    lines = [f"# {title or 'Evaluation report'}", ""]
    if runs:
        r0 = runs[0]
        lines += [f"- dataset: `{r0.dataset}` (split `{r0.split}`)", f"- model: `{r0.model}`",
                  f"- reranker: `{r0.reranker}`" if r0.reranker else "- reranker: none"]
        if command:
            lines.append(f"- command: `{command}`")
        lines.append("")
    header, rows = table_rows(runs)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("| " + " | ".join("---" for _ in header) + " |")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "`rerank_top` 0 is the first stage alone; timings are wall-clock on the machine that ran it "
              "(`*_s` seconds in all, `*_ms_per_query` milliseconds per query).", ""]
    return "\n".join(lines)


def plot_dims(runs: Sequence[RunResult], path: str | Path, *, metric: str, title: str | None = None) -> Path:
    """Score against Matryoshka dim, one line per first-stage mode and rerank depth (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for r in runs:
        if "dim" in r.settings and metric in r.metrics:
            key = (_stage_label(r.settings), int(r.settings.get("rerank_top", 0)))
            series.setdefault(key, []).append((int(r.settings["dim"]), float(r.metrics[metric])))
    several_stages = len({m for m, _ in series}) > 1
    if several_stages and len({p[0] for pts in series.values() for p in pts}) == 1:
        return _plot_stages(series, path, metric=metric, title=title or (runs[0].dataset if runs else ""))
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for (stage, top), pts in sorted(series.items()):
        pts.sort()
        label = "first stage" if top == 0 else f"+ rerank top {top}"
        if several_stages:
            label = f"{stage}: {label}"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    dims = sorted({p[0] for pts in series.values() for p in pts})
    if len(dims) > 1 and dims[-1] / max(dims[0], 1) >= 4:
        ax.set_xscale("log", base=2)
    if dims:
        ax.set_xticks(dims)
        ax.set_xticklabels([str(d) for d in dims])
    ax.set_xlabel("embedding dim (Matryoshka prefix)")
    ax.set_ylabel(metric)
    ax.set_title(title or (runs[0].dataset if runs else ""))
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend()
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out


def _plot_stages(series: dict[tuple[str, int], list[tuple[int, float]]], path: str | Path, *, metric: str,
                 title: str) -> Path:
    """One dim, several first stages (a mode sweep): one horizontal bar per stage and rerank depth."""
    import matplotlib.pyplot as plt

    rows = [(stage if top == 0 else f"{stage} + rerank top {top}", pts[0][1])
            for (stage, top), pts in series.items()]
    fig, ax = plt.subplots(figsize=(6, 0.8 + 0.35 * len(rows)), dpi=100)
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color="tab:blue")
    for i, (_, v) in enumerate(rows):
        ax.text(v, i, f" {v:.4f}", va="center", fontsize=8)
    lo = min(r[1] for r in rows)
    ax.set_xlim(max(0.0, lo - 0.1), max(r[1] for r in rows) + 0.05)
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out


def _stage_label(settings: dict[str, Any]) -> str:
    """The first stage of a run: its mode, and for hybrid the fusion (and weighted's alpha)."""
    mode = str(settings.get("mode", ""))
    if mode != "hybrid":
        return mode
    if settings.get("fusion") == "weighted":
        return f"hybrid weighted a={settings.get('alpha')}"
    return f"hybrid {settings.get('fusion', 'rrf')}"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)
