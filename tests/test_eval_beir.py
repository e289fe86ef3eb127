"""BEIR-format runner, the mteb wrapper and ``omniret eval`` on a small real-sentence dataset with MiniLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omniret.errors import ConfigError, DimensionError

# ten topics, three documents each; each query asks for the first document of its topic
TOPICS = {
    "pasta": ["Boil the spaghetti in salted water for about ten minutes until it is al dente.",
              "Fresh egg pasta is rolled thin and cut into ribbons by hand.",
              "A spoon of starchy pasta water helps the sauce cling to the noodles."],
    "jupiter": ["Jupiter is the largest planet in the solar system, a gas giant.",
                "The Great Red Spot on Jupiter is a storm larger than Earth.",
                "Galileo discovered four moons orbiting Jupiter in 1610."],
    "bicycle": ["Pump the bicycle tyres to the pressure printed on their sidewall.",
                "A loose bike chain usually needs the rear wheel pulled back.",
                "Commuters who cycle to work get daily exercise without a gym."],
    "python": ["Python lists grow dynamically and can hold objects of any type.",
               "A Python dictionary maps hashable keys to values.",
               "The Python interpreter reads source files and compiles them to bytecode."],
    "coffee": ["Espresso is brewed by forcing hot water through finely ground coffee.",
               "Light roast coffee beans keep more of their fruity acidity.",
               "A French press steeps coarse coffee grounds for four minutes."],
    "volcano": ["Lava erupts from a volcano when magma reaches the surface.",
                "Volcanic ash clouds can ground aircraft for days.",
                "Mount Etna in Sicily is one of the most active volcanoes."],
    "football": ["The striker scored a goal in the final minute of the football match.",
                 "A football team fields eleven players including the goalkeeper.",
                 "The referee showed a red card for a dangerous tackle."],
    "garden": ["Water tomato plants deeply at the roots in the morning.",
               "Compost improves garden soil and feeds the vegetables.",
               "Prune rose bushes in late winter before new growth starts."],
    "piano": ["The piano has eighty-eight keys, black and white.",
              "Practising scales every day builds finger strength on the piano.",
              "A grand piano's strings run horizontally inside its case."],
    "sleep": ["Adults need around seven to nine hours of sleep each night.",
              "Blue light from screens before bed can delay sleep.",
              "Deep sleep is when the body repairs muscles and tissue."],
}
QUERIES = {
    "pasta": "how long should I cook spaghetti", "jupiter": "what is the biggest planet",
    "bicycle": "how much air to put in bike tires", "python": "can a python list change size",
    "coffee": "how is espresso made", "volcano": "why does lava come out of volcanoes",
    "football": "late winning goal in a soccer game", "garden": "when to water tomatoes",
    "piano": "how many keys does a piano have", "sleep": "how many hours of sleep do adults need",
}


def write_dataset(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as f:
        for topic, docs in TOPICS.items():
            for i, text in enumerate(docs):
                f.write(json.dumps({"_id": f"{topic}-{i}", "title": topic if i == 0 else "", "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as f:
        for topic, text in QUERIES.items():
            f.write(json.dumps({"_id": f"q-{topic}", "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"q-{t}\t{t}-0\t1" for t in QUERIES]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("beir") / "tiny-topics")


@pytest.fixture(scope="module")
def minilm(minilm_path: Path):  # noqa: ANN201
    from omniret.embed import load_embedder

    return load_embedder(str(minilm_path))


def test_beir_runner_same_scores_through_faiss_and_qdrant(dataset: Path, minilm) -> None:  # noqa: ANN001
    from omniret.evaluation.beir import load_beir, run_beir
    from omniret.evaluation.sweeps import SweepConfig

    data = load_beir(dataset)
    assert len(data.corpus) == 30 and len(data.queries) == 10
    assert data.corpus["pasta-0"].text.startswith("pasta Boil the spaghetti")  # title + " " + text
    by_backend = {}
    for backend in ("faiss", "qdrant"):
        runs = run_beir(dataset, minilm, config=SweepConfig(dims=[128, 384], backend=backend, k=10))
        assert [r.settings["dim"] for r in runs] == [128, 384]
        by_backend[backend] = [r.metrics for r in runs]
        assert all(r.reranker is None and r.settings["rerank_top"] == 0 for r in runs)
        assert runs[0].timings["search_ms_per_query"] > 0
    full = by_backend["faiss"][1]
    assert full["ndcg@10"] > 0.5 and full["recall@10"] > 0.7
    for a, b in zip(by_backend["faiss"], by_backend["qdrant"], strict=True):
        assert a == pytest.approx(b, abs=1e-9)


def test_beir_runner_hnsw_and_validation(dataset: Path, minilm) -> None:  # noqa: ANN001
    from omniret.evaluation.beir import run_beir
    from omniret.evaluation.sweeps import SweepConfig

    exact = run_beir(dataset, minilm, config=SweepConfig(k=10))[0]
    ann = run_beir(dataset, minilm, config=SweepConfig(k=10, index="hnsw"))[0]
    assert ann.settings["index"] == "hnsw"
    assert ann.metrics["ndcg@10"] == pytest.approx(exact.metrics["ndcg@10"], abs=0.05)
    with pytest.raises(DimensionError, match=r"--dims 512: must be between 1 and the model's dimension 384"):
        run_beir(dataset, minilm, config=SweepConfig(dims=[512]))
    with pytest.raises(ConfigError, match=r"--rerank-top 5 needs a reranker"):
        run_beir(dataset, minilm, config=SweepConfig(rerank_tops=[0, 5]))
    with pytest.raises(ConfigError, match=r"qrels/dev.tsv: no such file; splits here: test"):
        run_beir(dataset, minilm, split="dev")


def test_mteb_wrapper_on_a_local_task(tmp_path: Path, minilm) -> None:  # noqa: ANN001
    from omniret.evaluation.mteb_runner import local_retrieval_task, run_mteb

    corpus = {f"{t}-{i}": d for t, docs in TOPICS.items() for i, d in enumerate(docs)}
    queries = {f"q-{t}": q for t, q in QUERIES.items()}
    qrels = {f"q-{t}": {f"{t}-0": 1} for t in QUERIES}
    task = local_retrieval_task("OmniretTopics", corpus, queries, qrels,
                                instruction="Given a question, retrieve the passage that answers it")
    runs = run_mteb(minilm, [task], tmp_path, dims=[384, 128])
    assert [r.settings["dim"] for r in runs] == [384, 128]
    assert runs[0].metrics["ndcg@10"] > 0.5
    assert runs[0].metrics["main_score"] == pytest.approx(runs[0].metrics["ndcg@10"])
    # mteb's own result files, one per dim (the truncated dim as an mteb experiment)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "mteb").rglob("OmniretTopics.json"))
    assert len(files) == 2 and any("experiments/dim_128" in f for f in files)
    saved = json.loads((tmp_path / files[0]).read_text())
    assert saved["task_name"] == "OmniretTopics" and "ndcg_at_10" in saved["scores"]["test"][0]


def test_mteb_retrieval_mock_task_passes(minilm) -> None:  # noqa: ANN001
    import mteb
    from mteb.models.models_protocols import EncoderProtocol

    from omniret.evaluation.mteb_runner import make_encoder

    encoder = make_encoder(minilm)
    assert isinstance(encoder, EncoderProtocol)
    from mteb.mocks import ALL_MOCK_TASK_TEST_GRID

    tasks = [t for t in ALL_MOCK_TASK_TEST_GRID
             if t.metadata.name in {"MockRetrievalTask", "MockInstructionRetrieval"}]
    result = mteb.evaluate(encoder, tasks, cache=None, raise_error=True, show_progress_bar=False)
    assert sorted(r.task_name for r in result.task_results) == ["MockInstructionRetrieval", "MockRetrievalTask"]


@pytest.mark.slow  # every text mock task mteb has: about a CPU-minute
@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn/torch warnings on mteb's two-sample mock data
def test_mteb_model_checks_pass(minilm) -> None:  # noqa: ANN001
    import mteb

    from omniret.evaluation.mteb_runner import make_encoder

    checks = mteb.mock_run(make_encoder(minilm))  # mteb's own model check: every compatible mock task
    assert checks.all_passed, checks.to_markdown()


def test_cli_eval_beir_and_mteb(dataset: Path, minilm_path: Path, tmp_path: Path) -> None:
    from omniret.cli import app

    runner = CliRunner()
    out = tmp_path / "beir-out"
    res = runner.invoke(app, ["eval", "beir", str(dataset), "--model", str(minilm_path), "--dims", "64,128",
                              "--dims", "384", "--backend", "qdrant", "--k", "20", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert [r["settings"]["dim"] for r in data["runs"]] == [64, 128, 384]
    for r in data["runs"]:
        assert {"dataset", "split", "model", "reranker", "metrics", "settings", "timings"} <= set(r)
        assert {"ndcg@10", "recall@100", "mrr@10"} <= set(r["metrics"])
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| dim |" in (out / "report.md").read_text()

    res = runner.invoke(app, ["eval", "mteb", "--tasks", str(dataset), "--model", str(minilm_path),
                              "--out", str(tmp_path / "mteb-out")])
    assert res.exit_code == 0, res.output
    runs = json.loads((tmp_path / "mteb-out" / "results.json").read_text())["runs"]
    assert runs[0]["dataset"] == "LocalTinyTopicsRetrieval" and runs[0]["metrics"]["ndcg@10"] > 0.5

    res = runner.invoke(app, ["eval", "beir", str(dataset), "--model", str(minilm_path), "--rerank-top", "5"])
    assert res.exit_code == 1 and "--rerank-top 5 needs a reranker" in res.output
    res = runner.invoke(app, ["eval", "mteb", "--tasks", "NoSuchTaskX", "--model", str(minilm_path)])
    assert res.exit_code == 1 and "mteb does not know task(s) NoSuchTaskX" in res.output
