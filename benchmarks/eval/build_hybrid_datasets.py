"""Build the BEIR-format folders the hybrid (dense + lexical) measurements use; offline and deterministic.

- ``wordnet-defs``: Debian's WordNet (package ``wordnet-base``), sampled exactly as
  ``benchmarks/wordnet_data.py`` samples it (seed 13, 1500 noun/verb synsets with examples). Query: a
  test synset's definition; corpus: every sampled synset's words and example sentences. 300 queries.
- ``debian-packages``: this machine's installed Debian packages (``/var/lib/dpkg/status``). Query: the
  one-line synopsis; document: title = package name, text = the long description. Packages whose long
  description or synopsis is shared with another (library families) are left out, so each query has one
  right answer. The package list depends on the machine: ``VERSION`` records its size and a digest.

    python benchmarks/eval/build_hybrid_datasets.py OUT_DIR
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
DPKG_STATUS = Path("/var/lib/dpkg/status")


def _write_beir(root: Path, corpus: list[dict[str, str]], queries: list[dict[str, str]],
                qrels: list[tuple[str, str]]) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for d in corpus:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    with (root / "queries.jsonl").open("w", encoding="utf-8") as f:
        for q in queries:
            f.write(json.dumps(q, ensure_ascii=False) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, d in qrels]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def wordnet_defs(out: Path, *, corpus_size: int = 1500, train: int = 1000, test: int = 300, seed: int = 13) -> Path:
    sys.path.insert(0, str(HERE.parent))
    from wordnet_data import synsets  # the same parser and sampling as the training experiment

    rows = synsets("noun") + synsets("verb")
    rng = random.Random(seed)
    rng.shuffle(rows)
    rows = rows[:corpus_size]
    tests = rows[train:train + test]
    corpus = [{"_id": r["id"], "title": "", "text": r["doc"]} for r in rows]
    queries = [{"_id": f"q{r['id']}", "text": r["query"]} for r in tests]
    return _write_beir(out / "wordnet-defs", corpus, queries, [(f"q{r['id']}", r["id"]) for r in tests])


def _dpkg_packages(status: Path) -> list[dict[str, str]]:
    """Name, synopsis and long description of each package stanza (fields may follow Description)."""
    pkgs: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    desc: list[str] = []
    key = ""
    for line in [*status.read_text(encoding="utf-8", errors="replace").splitlines(), ""]:
        if not line.strip():
            if cur.get("Package") and desc:
                pkgs.append({"name": cur["Package"], "synopsis": desc[0].strip(),
                             "long": " ".join(x.strip() for x in desc[1:] if x.strip() != ".").strip()})
            cur, desc, key = {}, [], ""
        elif line.startswith((" ", "\t")):
            if key == "Description":
                desc.append(line)
        elif ":" in line:
            key, _, val = line.partition(":")
            cur[key] = val.strip()
            if key == "Description":
                desc = [val]
    return pkgs


def debian_packages(out: Path, status: Path = DPKG_STATUS) -> Path:
    pkgs = [p for p in _dpkg_packages(status) if p["synopsis"] and len(p["long"]) >= 40]
    longs, synopses = Counter(p["long"] for p in pkgs), Counter(p["synopsis"].lower() for p in pkgs)
    pkgs = sorted((p for p in pkgs if longs[p["long"]] == 1 and synopses[p["synopsis"].lower()] == 1),
                  key=lambda p: p["name"])
    corpus = [{"_id": p["name"], "title": p["name"], "text": p["long"]} for p in pkgs]
    queries = [{"_id": f"q-{p['name']}", "text": p["synopsis"]} for p in pkgs]
    root = _write_beir(out / "debian-packages", corpus, queries, [(f"q-{p['name']}", p["name"]) for p in pkgs])
    digest = hashlib.sha256("\n".join(p["name"] for p in pkgs).encode()).hexdigest()[:12]
    (root / "VERSION").write_text(f"{len(pkgs)} packages from {status}, names sha256 {digest}\n", encoding="utf-8")
    return root


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ".cache/hybrid-data")
    for path in (wordnet_defs(target), debian_packages(target)):
        n = sum(1 for _ in (path / "corpus.jsonl").open())
        q = sum(1 for _ in (path / "queries.jsonl").open())
        print(f"{path}: {n} documents, {q} queries")
