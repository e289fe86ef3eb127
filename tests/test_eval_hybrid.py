"""``omniret eval beir --mode dense,lexical,hybrid`` on the project's committed offline set (stdlib docstrings,
all-MiniLM-L6-v2): every mode is a run with ``settings.mode``, and hybrid beats both single modes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

STDLIB = Path(__file__).resolve().parents[1] / "benchmarks" / "eval" / "data" / "stdlib-docs"


def test_mode_sweep_hybrid_beats_dense_and_lexical_on_stdlib_docs(minilm_path: Path, tmp_path: Path) -> None:
    from omniret.cli import app

    out = tmp_path / "modes"
    res = CliRunner().invoke(app, ["eval", "beir", str(STDLIB), "--model", str(minilm_path), "--mode",
                                   "dense,lexical", "--mode", "hybrid", "--fusion", "rrf,weighted", "--alpha", "0.8",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    runs = json.loads((out / "results.json").read_text())["runs"]
    got = [(r["settings"]["mode"], r["settings"].get("fusion"), r["settings"].get("alpha")) for r in runs]
    assert got == [("dense", None, None), ("lexical", None, None), ("hybrid", "rrf", None),
                   ("hybrid", "weighted", 0.8)]
    ndcg = {(m, f): r["metrics"]["ndcg@10"] for (m, f, _), r in zip(got, runs, strict=True)}
    assert min(ndcg.values()) > 0.5
    # the figure in benchmarks/RESULTS.md: weighted fusion (0.8 dense) beats the better single mode
    assert ndcg[("hybrid", "weighted")] >= max(ndcg[("dense", None)], ndcg[("lexical", None)]), ndcg
    assert runs[1]["timings"]["embed_query_ms_per_query"] == 0.0  # lexical queries are not embedded
    assert "| mode |" in (out / "report.md").read_text()


def test_bad_modes_fail_before_the_model_loads(tmp_path: Path) -> None:
    from omniret.cli import app

    runner = CliRunner()
    for args, message in ((["--mode", "dense,fuzzy"], "--mode='fuzzy': choose one of dense, lexical, hybrid"),
                          (["--mode", "hybrid", "--fusion", "max"], "--fusion='max': choose one of rrf, weighted"),
                          (["--mode", "hybrid", "--alpha", "0.3"], "--alpha 0.3 is the weight of --fusion weighted"),
                          (["--mode", "hybrid", "--fusion", "weighted", "--alpha", "1.2"],
                           "alpha=1.2: must be a number in [0, 1]")):
        res = runner.invoke(app, ["eval", "beir", str(STDLIB), "--model", "no-such-model", *args,
                                  "--out", str(tmp_path / "x")])
        assert res.exit_code == 1 and message in res.output, res.output
