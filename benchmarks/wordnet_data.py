"""Build a small retrieval dataset from Debian's WordNet (package wordnet-base, /usr/share/wordnet).

Query: a synset's definition. Document: its words and example sentences ("bank, depository financial
institution: he cashed a check at the bank"). Only synsets with examples are used. Queries are split
into train and test; the corpus holds every chosen synset's document (train, test and distractors).

    python benchmarks/wordnet_data.py --out .cache/wordnet-cpu [--train 1000 --test 300 --corpus 1500]

Writes corpus.jsonl (id, text), train.jsonl (query, positive), test_queries.jsonl (id, text),
test_qrels.json ({query_id: {doc_id: 1}}) and mine_corpus.jsonl (the corpus without the test positives,
for hard-negative mining).
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

WORDNET = Path("/usr/share/wordnet")


def synsets(pos: str = "noun") -> list[dict]:
    out = []
    for line in (WORDNET / f"data.{pos}").read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(" ") or "|" not in line:
            continue
        head, gloss = line.split("|", 1)
        fields = head.split()
        offset, n_words = fields[0], int(fields[3], 16)
        words = [fields[4 + 2 * i].replace("_", " ") for i in range(n_words)]
        words = [re.sub(r"\(.*\)$", "", w) for w in words]
        parts = [p.strip() for p in gloss.strip().split(";")]
        definition = parts[0]
        examples = [p.strip('"').strip() for p in parts[1:] if p.startswith('"')]
        if not examples or len(definition) < 10:
            continue
        out.append({"id": f"{pos[0]}{offset}", "query": definition,
                    "doc": f"{', '.join(words)}: {' '.join(examples)}"})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(".cache/wordnet-cpu"))
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--corpus", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=13)
    a = ap.parse_args()
    rows = synsets("noun") + synsets("verb")
    rng = random.Random(a.seed)
    rng.shuffle(rows)
    rows = rows[:a.corpus]
    train, test = rows[:a.train], rows[a.train:a.train + a.test]
    a.out.mkdir(parents=True, exist_ok=True)
    with (a.out / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"id": r["id"], "text": r["doc"]}) + "\n")
    with (a.out / "train.jsonl").open("w", encoding="utf-8") as f:
        for r in train:
            f.write(json.dumps({"query": r["query"], "positive": r["doc"], "id": r["id"]}) + "\n")
    with (a.out / "test_queries.jsonl").open("w", encoding="utf-8") as f:
        for r in test:
            f.write(json.dumps({"id": r["id"], "text": r["query"]}) + "\n")
    test_ids = {r["id"] for r in test}
    with (a.out / "mine_corpus.jsonl").open("w", encoding="utf-8") as f:
        for r in rows:
            if r["id"] not in test_ids:  # a test positive mined as a training negative teaches "never relevant"
                f.write(json.dumps({"id": r["id"], "text": r["doc"]}) + "\n")
    (a.out / "test_qrels.json").write_text(json.dumps({r["id"]: {r["id"]: 1} for r in test}), encoding="utf-8")
    print(f"{len(rows)} documents, {len(train)} train queries, {len(test)} test queries -> {a.out}")


if __name__ == "__main__":
    main()
