"""Build the offline evaluation datasets the committed reports use (deterministic, no network).

- ``stdlib-docs`` (BEIR format): the docstrings of public functions in a fixed list of Python standard
  library modules. Corpus: title ``module.function``, text = the docstring *without* its first line.
  Queries: the docstring's first line (its one-line summary). Each query's one relevant document is its
  own function's body text, so the task is "find the function whose documentation this summary opens".
  Docstrings change between Python versions; the version is written to ``stdlib-docs/VERSION``.
- ``tiny-mixed`` (MMEB style): generated images, mpeg4 videos and a 3-page PDF; text->image,
  image->text, text->video and text->PDF-page queries (see omniret.evaluation.mmeb for the layout).

    python benchmarks/eval/build_datasets.py OUT_DIR
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from pathlib import Path

MODULES = ("json", "textwrap", "shutil", "os.path", "string", "base64", "fnmatch", "glob", "heapq", "bisect",
           "statistics", "random", "calendar", "urllib.parse", "difflib", "zipfile", "tarfile", "gzip", "csv",
           "re", "functools", "itertools", "operator", "copy", "pathlib", "datetime", "uuid", "hashlib",
           "secrets", "shlex", "tempfile", "subprocess", "threading", "queue", "contextlib", "inspect",
           "math", "cmath", "decimal", "fractions", "html", "email.utils", "http.cookies", "ipaddress", "locale")


def stdlib_docs(out: Path, *, max_queries: int = 200) -> Path:
    root = out / "stdlib-docs"
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    corpus, queries, qrels = [], [], []
    seen_summaries: set[str] = set()
    for modname in MODULES:
        mod = importlib.import_module(modname)
        for name in sorted(dir(mod)):
            if name.startswith("_"):
                continue
            obj = getattr(mod, name)
            if not (inspect.isfunction(obj) or inspect.isbuiltin(obj)):
                continue
            doc = inspect.getdoc(obj) or ""
            lines = [ln.strip() for ln in doc.splitlines()]
            if len(lines) < 3 or not lines[0] or len(lines[0]) < 20:
                continue
            body = " ".join(ln for ln in lines[1:] if ln)
            if len(body) < 40 or lines[0] in seen_summaries:
                continue
            seen_summaries.add(lines[0])
            did = f"{modname}.{name}"
            corpus.append({"_id": did, "title": did, "text": body[:1500]})
            queries.append({"_id": f"q:{did}", "text": lines[0]})
            qrels.append((f"q:{did}", did))
    # every function stays in the corpus; every other one becomes a test query, up to max_queries
    picked = [i for i in range(len(queries)) if i % 2 == 0][:max_queries]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps(queries[i]) + "\n" for i in picked), encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{qrels[i][0]}\t{qrels[i][1]}\t1\n" for i in picked),
        encoding="utf-8")
    (root / "VERSION").write_text(f"python {sys.version.split()[0]}; {len(corpus)} docs, {len(picked)} queries\n",
                                  encoding="utf-8")
    return root


def tiny_mixed(out: Path) -> Path:
    import av
    import numpy as np
    from PIL import Image

    root = out / "tiny-mixed"
    (root / "media").mkdir(parents=True, exist_ok=True)
    colours = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}

    def image(rgb: tuple[int, int, int], size: int = 64) -> Image.Image:
        arr = np.zeros((size, size, 3), dtype=np.uint8)
        arr[:] = rgb
        arr[size // 4: size // 2, size // 4: size // 2] = 255 - np.array(rgb, dtype=np.uint8)
        return Image.fromarray(arr)

    candidates, queries, qrels = [], [], []
    for name, rgb in colours.items():
        image(rgb).save(root / "media" / f"{name}.png")
        with av.open(str(root / "media" / f"{name}.mp4"), "w") as f:
            stream = f.add_stream("mpeg4", rate=4)
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
            for i in range(8):
                for packet in stream.encode(av.VideoFrame.from_image(image(tuple(min(255, c + 4 * i) for c in rgb)))):
                    f.mux(packet)
            for packet in stream.encode():
                f.mux(packet)
        candidates += [{"id": f"img-{name}", "image": f"media/{name}.png"},
                       {"id": f"vid-{name}", "video": f"media/{name}.mp4", "fps": 2, "max_frames": 4},
                       {"id": f"txt-{name}", "text": f"a {name} square"}]
        queries += [{"id": f"t2i-{name}", "text": f"a {name} picture"},
                    {"id": f"i2t-{name}", "image": f"media/{name}.png"},
                    {"id": f"t2v-{name}", "text": f"a {name} clip"}]
        qrels += [(f"t2i-{name}", f"img-{name}"), (f"i2t-{name}", f"txt-{name}"), (f"t2v-{name}", f"vid-{name}")]
    pages = [image(rgb, 96) for rgb in colours.values()]
    pages[0].save(root / "media" / "doc.pdf", "PDF", save_all=True, append_images=pages[1:])
    for n, name in enumerate(colours, 1):
        candidates.append({"id": f"page-{n}", "image": "media/doc.pdf", "page": n})
        queries.append({"id": f"t2d-{name}", "text": f"the {name} page"})
        qrels.append((f"t2d-{name}", f"page-{n}"))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "candidates.jsonl").write_text("".join(json.dumps(c) + "\n" for c in candidates))
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels))
    (root / "task.json").write_text(json.dumps({"name": "TinyMixed", "query_instruction": "Find the matching item"}))
    return root


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/eval/data")
    print(stdlib_docs(out), (out / "stdlib-docs" / "VERSION").read_text().strip())
    print(tiny_mixed(out))
