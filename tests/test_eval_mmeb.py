"""MMEB-style runner end to end with the tiny Qwen3-VL checkpoints on generated images, video and PDF pages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from omniret.errors import ConfigError

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220)}


def _image(colour: tuple[int, int, int], size: int = 64) -> Image.Image:
    arr = np.zeros((size, size, 3), dtype=np.uint8)
    arr[:] = colour
    arr[size // 4: size // 2, size // 4: size // 2] = 255 - np.array(colour, dtype=np.uint8)
    return Image.fromarray(arr)


def _video(path: Path, colour: tuple[int, int, int], frames: int = 8) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(frames):
            img = _image(tuple(min(255, c + 4 * i) for c in colour))
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def make_task(root: Path) -> Path:
    """text -> image, image -> text, text -> video and text -> PDF page candidates in one folder."""
    (root / "media").mkdir(parents=True)
    candidates, queries, qrels = [], [], []
    for name, rgb in COLOURS.items():
        _image(rgb).save(root / "media" / f"{name}.png")
        _video(root / "media" / f"{name}.mp4", rgb)
        candidates += [{"id": f"img-{name}", "image": f"media/{name}.png"},
                       {"id": f"vid-{name}", "video": f"media/{name}.mp4", "fps": 2, "max_frames": 4},
                       {"id": f"txt-{name}", "text": f"a {name} square"}]
        queries += [{"id": f"t2i-{name}", "text": f"a {name} picture"},
                    {"id": f"i2t-{name}", "image": f"media/{name}.png"},
                    {"id": f"t2v-{name}", "text": f"a {name} clip"}]
        qrels += [(f"t2i-{name}", f"img-{name}"), (f"i2t-{name}", f"txt-{name}"), (f"t2v-{name}", f"vid-{name}")]
    pages = [_image(rgb, 96) for rgb in COLOURS.values()]
    pages[0].save(root / "media" / "doc.pdf", "PDF", save_all=True, append_images=pages[1:])
    for n, name in enumerate(COLOURS, 1):
        candidates.append({"id": f"page-{n}", "image": "media/doc.pdf", "page": n})
        queries.append({"id": f"t2d-{name}", "text": f"the {name} page"})
        qrels.append((f"t2d-{name}", f"page-{n}"))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "candidates.jsonl").write_text("".join(json.dumps(c) + "\n" for c in candidates))
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels))
    (root / "task.json").write_text(json.dumps({"name": "TinyMixed", "query_instruction": "Find the matching item"}))
    return root


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_task(tmp_path_factory.mktemp("mmeb") / "tiny-mixed")


def test_load_mmeb_renders_pages_and_infers_category(task_dir: Path) -> None:
    from omniret.evaluation.mmeb import load_mmeb

    task = load_mmeb(task_dir)
    assert task.category == "visdoc" and task.main_metric == "ndcg@5"
    page = task.candidates["page-2"]
    assert isinstance(page.image, Image.Image) and page.metadata["page"] == 2
    assert task.candidates["vid-red"].video == str(task_dir / "media" / "red.mp4")
    assert len(task.queries) == 12 and task.query_instruction == "Find the matching item"


def test_mmeb_runner_end_to_end(task_dir: Path, tiny_vl_embedding: Path, tiny_vl_reranker: Path,
                                tmp_path: Path) -> None:
    from omniret.embed import load_embedder
    from omniret.evaluation.mmeb import run_mmeb
    from omniret.evaluation.reports import load_results, write_report
    from omniret.evaluation.sweeps import SweepConfig
    from omniret.rerank import load_reranker

    emb = load_embedder(str(tiny_vl_embedding))
    rr = load_reranker(str(tiny_vl_reranker))
    runs = run_mmeb(task_dir, emb, rr, config=SweepConfig(dims=[32, emb.dim], rerank_tops=[0, 3], k=10,
                                                          metrics=["hit@1", "ndcg@5", "recall@5"]))
    assert [(r.settings["dim"], r.settings["rerank_top"]) for r in runs] == [(32, 0), (32, 3), (emb.dim, 0),
                                                                             (emb.dim, 3)]
    for r in runs:
        assert set(r.metrics) == {"hit@1", "ndcg@5", "recall@5"}
        assert all(0.0 <= v <= 1.0 for v in r.metrics.values())
        assert r.settings["category"] == "visdoc" and r.settings["num_queries"] == 12
    assert runs[1].reranker == rr.name and runs[0].reranker is None
    assert runs[1].timings["rerank_ms_per_query"] > 0 and runs[0].timings["rerank_ms_per_query"] == 0
    # reranking only reorders the head: recall@5 unchanged when N <= 5 and the tail is kept
    assert runs[1].metrics["recall@5"] == pytest.approx(runs[0].metrics["recall@5"])

    paths = write_report(tmp_path / "out", runs, main_metric="ndcg@5", title="tiny mixed")
    png = paths["plot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(paths["plot"]) as im:
        im.verify()
    assert [r.metrics for r in load_results(tmp_path / "out")] == [r.metrics for r in runs]


def test_cli_eval_mm(task_dir: Path, tiny_vl_embedding: Path, tmp_path: Path) -> None:
    from omniret.cli import app

    out = tmp_path / "mm-out"
    res = CliRunner().invoke(app, ["eval", "mm", str(task_dir), "--model", str(tiny_vl_embedding), "--dims", "16,32",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert data["main_metric"] == "ndcg@5"
    assert [r["settings"]["dim"] for r in data["runs"]] == [16, 32]
    assert {"hit@1", "ndcg@5", "recall@5"} <= set(data["runs"][0]["metrics"])
    import matplotlib.image

    assert matplotlib.image.imread(out / "plot.png").ndim == 3


def test_mmeb_bad_folders(tmp_path: Path) -> None:
    from omniret.evaluation.mmeb import load_mmeb

    root = tmp_path / "bad"
    root.mkdir()
    with pytest.raises(ConfigError, match=r"no qrels for split 'test'"):
        load_mmeb(root)
    (root / "qrels.jsonl").write_text(json.dumps({"query_id": "q", "corpus_id": "d"}) + "\n")
    (root / "queries.jsonl").write_text(json.dumps({"id": "q", "text": "x", "page": 1}) + "\n")
    (root / "candidates.jsonl").write_text(json.dumps({"id": "d", "text": "y"}) + "\n")
    with pytest.raises(ConfigError, match=r"\"page\" needs \"image\" to be one PDF file"):
        load_mmeb(root)
    (root / "queries.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(ConfigError, match=r"line 1: every item needs an \"id\""):
        load_mmeb(root)
