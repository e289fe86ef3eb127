"""Build a held-out retrieval dataset from this machine's Debian package descriptions (apt's Translation-en).

Query: a package's one-line synopsis ("fast, scalable, distributed revision control system"). Document:
its long description (the paragraphs under it, as ``apt show`` prints them). Packages whose synopsis or
long description is too short are skipped, as are duplicate long descriptions (one source package's
binaries often share them). The rows are shuffled and split into training queries, evaluation queries and
distractors; the corpus holds every chosen package's description.

    apt-get update -o Acquire::Languages=en   # once: fetches the long descriptions (Translation-en)
    python benchmarks/debian_data.py --out .cache/debian [--train 750 --eval 250 --corpus 4000]

Writes corpus.jsonl (id, text), train.jsonl (query, positive), eval.jsonl (query, positive) and
mine_corpus.jsonl (the corpus without the evaluation positives, for mining the training negatives).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
from pathlib import Path

LISTS = Path("/var/lib/apt/lists")


def packages() -> list[dict]:
    """Every package's (name, synopsis, long description) from apt's ``*Translation-en*`` indexes."""
    files = sorted(LISTS.glob("*_main_i18n_Translation-en*"))
    if not files:
        raise SystemExit(f"no Translation-en under {LISTS}: run apt-get update -o Acquire::Languages=en")
    text = "\n\n".join(subprocess.run(["lz4cat" if f.suffix == ".lz4" else "cat", str(f)], capture_output=True,
                                       text=True, check=True).stdout for f in files)
    out, seen = [], set()
    for stanza in text.split("\n\n"):
        name, desc, lines = None, None, []
        in_desc = False
        for line in stanza.splitlines():
            if line.startswith("Package: "):
                name = line[9:].strip()
            if line.startswith("Description-en: "):
                desc, in_desc = line[16:].strip(), True
            elif in_desc and line.startswith(" "):
                body = line.strip()
                lines.append("" if body == "." else body)
            elif in_desc:
                in_desc = False
        long = " ".join(x for x in lines if x).strip()
        if not name or not desc or len(desc) < 15 or len(long) < 80 or long in seen:
            continue
        seen.add(long)
        out.append({"id": name, "query": desc, "doc": long})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(".cache/debian"))
    ap.add_argument("--train", type=int, default=750)
    ap.add_argument("--eval", type=int, default=250)
    ap.add_argument("--corpus", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=13)
    a = ap.parse_args()
    rows = packages()
    rng = random.Random(a.seed)
    rng.shuffle(rows)
    rows = rows[:a.corpus]
    train, held = rows[:a.train], rows[a.train:a.train + a.eval]
    a.out.mkdir(parents=True, exist_ok=True)

    def write(name: str, items: list[dict], keys: tuple[str, str]) -> None:
        with (a.out / name).open("w", encoding="utf-8") as f:
            for r in items:
                f.write(json.dumps({keys[0]: r["query" if keys[0] == "query" else "id"],
                                    keys[1]: r["doc"]}) + "\n")

    write("corpus.jsonl", rows, ("id", "text"))
    write("train.jsonl", train, ("query", "positive"))
    write("eval.jsonl", held, ("query", "positive"))
    held_ids = {r["id"] for r in held}
    # an evaluation positive mined as a training negative would teach "never relevant"
    write("mine_corpus.jsonl", [r for r in rows if r["id"] not in held_ids], ("id", "text"))
    print(f"{len(rows)} documents, {len(train)} train queries, {len(held)} evaluation queries -> {a.out}")


if __name__ == "__main__":
    main()
