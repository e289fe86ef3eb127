"""Build a training split for the committed stdlib docstrings set (``benchmarks/eval/data/stdlib-docs``).

Test side: the committed set as it is (its queries, qrels and 235-document corpus), so the rows are scored
on the same queries as the hybrid sweep in ``benchmarks/RESULTS.md``. Train side: the one-line summary ->
rest-of-docstring pairs of public functions, classes and methods of *other* standard-library modules (none
of the test set's modules, no summary that is also a test query), drawn in a fixed order and shuffled with
a seed. The layout is ``benchmarks/wordnet_data.py``'s, so ``benchmarks/recipe_experiment.py`` runs on it:

    python benchmarks/stdlib_data.py --out .cache/stdlib-train --train 600
    OMP_NUM_THREADS=1 python benchmarks/recipe_experiment.py --data .cache/stdlib-train --work .cache/stdlib-runs

Writes corpus.jsonl (the committed corpus), test_queries.jsonl, test_qrels.json, train.jsonl (query,
positive) and mine_corpus.jsonl (the training documents: hard negatives never come from the test corpus).
Docstrings differ between Python versions; the version is written to VERSION.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import random
import sys
import warnings
from pathlib import Path

TEST_SET = Path(__file__).resolve().parent / "eval" / "data" / "stdlib-docs"
#: modules that start programs, open windows or print on import
SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "pydoc_data", "lib2to3", "ensurepip",
        "venv", "msilib", "winreg", "winsound", "_winapi", "nt", "msvcrt", "test", "xxsubtype", "xxlimited"}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def pairs_of(modname: str) -> list[tuple[str, str, str]]:
    """(id, summary, body) for each documented public function, class and method of one module."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _pairs_of(modname)


def _pairs_of(modname: str) -> list[tuple[str, str, str]]:
    try:
        mod = importlib.import_module(modname)
    except Exception:  # noqa: BLE001 - a module that does not import here has nothing to give
        return []
    out = []
    objects = []
    for name in sorted(dir(mod)):
        obj = getattr(mod, name, None)
        if name.startswith("_") or getattr(obj, "__module__", modname) != modname:
            continue
        objects.append((f"{modname}.{name}", obj))
        if inspect.isclass(obj):
            objects += [(f"{modname}.{name}.{m}", getattr(obj, m)) for m in sorted(vars(obj))
                        if not m.startswith("_") and callable(getattr(obj, m, None))]
    for oid, obj in objects:
        if not (inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.isclass(obj)
                or inspect.ismethoddescriptor(obj)):
            continue
        doc = inspect.getdoc(obj) or ""
        lines = [ln.strip() for ln in doc.splitlines()]
        if len(lines) < 3 or len(lines[0]) < 20:
            continue
        body = " ".join(ln for ln in lines[1:] if ln)
        if len(body) >= 40:
            out.append((oid, lines[0], body[:1500]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--train", type=int, default=600)
    ap.add_argument("--seed", type=int, default=13)
    a = ap.parse_args()
    sys.path.insert(0, str(TEST_SET.parents[1]))
    from build_datasets import MODULES

    corpus = read_jsonl(TEST_SET / "corpus.jsonl")
    queries = read_jsonl(TEST_SET / "queries.jsonl")
    qrels: dict[str, dict[str, int]] = {}
    for line in (TEST_SET / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        qid, did, score = line.split("\t")
        qrels.setdefault(qid, {})[did] = int(score)
    taken = {q["text"] for q in queries} | {d["text"] for d in corpus}
    test_modules = set(MODULES)
    names = sorted(m for m in sys.stdlib_module_names
                   if not m.startswith("_") and m not in SKIP and m.split(".")[0] not in test_modules)
    seen: set[str] = set()
    rows = []
    for modname in names:
        for oid, summary, body in pairs_of(modname):
            if summary in taken or summary in seen or body in taken:
                continue
            seen.add(summary)
            rows.append({"query": summary, "positive": body, "id": oid})
    random.Random(a.seed).shuffle(rows)
    if len(rows) < a.train:
        raise SystemExit(f"only {len(rows)} training pairs found, fewer than --train {a.train}")
    rows = rows[:a.train]
    a.out.mkdir(parents=True, exist_ok=True)

    def write(name: str, items: list[dict]) -> None:
        (a.out / name).write_text("".join(json.dumps(x) + "\n" for x in items), encoding="utf-8")

    write("corpus.jsonl", [{"id": d["_id"], "text": d["text"]} for d in corpus])
    write("test_queries.jsonl", [{"id": q["_id"], "text": q["text"]} for q in queries])
    (a.out / "test_qrels.json").write_text(json.dumps(qrels), encoding="utf-8")
    write("train.jsonl", rows)
    write("mine_corpus.jsonl", [{"id": r["id"], "text": r["positive"]} for r in rows])
    (a.out / "VERSION").write_text(f"python {sys.version.split()[0]}; {len(rows)} training pairs from "
                                   f"{len({r['id'].split('.')[0] for r in rows})} modules; test: {len(queries)} "
                                   f"queries over {len(corpus)} documents\n", encoding="utf-8")
    print((a.out / "VERSION").read_text().strip())


if __name__ == "__main__":
    main()
