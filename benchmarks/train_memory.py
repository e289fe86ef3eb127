"""Peak memory of ``omniret train rerank`` with the defaults, per stage, beside the loss and validation figures.

The user's run: ``omniret train rerank --reranker <MiniLM> --data mined.jsonl --out ce`` (the anchored
reranker: 16 queries x (positive + the retriever's top 7) per step). Two sides train on the same data, seed
and steps, each in its own process, in turns (new, baseline, new, baseline, ... with ``--rounds``):

- ``new``: this tree's ``omniret.training``;
- ``baseline``: ``omniret.training`` as it was at ``--baseline-rev`` (extracted with ``git archive``, loaded in
  place of this tree's package; everything else is this tree's), i.e. pairs cut at the tokenizer's 512 tokens
  and every pair of a step scored with its graph kept.

Each side reports the peak resident set (``VmHWM``, reset between stages through ``/proc/self/clear_refs``)
and, on a GPU, the peak CUDA memory of each stage: setup (data, retriever, candidate lists), the validation
before training, and the training steps with the final validation. A side whose resident set passes
``--rss-cap-gb`` is killed (the machine is shared) and reported as over the cap.

    apt-get update -o Acquire::Languages=en && python benchmarks/debian_data.py --out .cache/debian
    omniret mine -m minilm --data .cache/debian/train.jsonl --corpus .cache/debian/mine_corpus.jsonl \\
        --out .cache/debian/mined.jsonl -n 3
    OMP_NUM_THREADS=1 python benchmarks/train_memory.py --data .cache/debian/mined.jsonl \\
        --eval-data .cache/debian/eval.jsonl --eval-queries 100 --max-steps 6 [--queries 300]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _status_kib(field: str, pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Stages:
    """Peak RSS (and CUDA memory) per named stage: ``VmHWM`` is read and reset at every switch."""

    def __init__(self) -> None:
        self.name = "setup"
        self.peaks: dict[str, dict[str, float]] = {}
        self._reset()

    def _reset(self) -> None:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def switch(self, name: str) -> None:
        import torch

        peak = {"rss_gb": _status_kib("VmHWM") / 2**20}
        if torch.cuda.is_available():
            peak["cuda_gb"] = torch.cuda.max_memory_allocated() / 2**30
        self.peaks[self.name] = peak
        self.name = name
        self._reset()


def child(args: argparse.Namespace) -> None:
    """One side: train with the defaults and write the figures to ``args.result``."""
    if args.code:
        import omniret.training

        omniret.training.__path__[:] = [str(Path(args.code) / "training")]  # the baseline's package
    stages = Stages()

    def log(msg: str) -> None:
        if msg.startswith("anchored reranker:") and stages.name == "setup":
            stages.switch("validation before training")
        elif msg.startswith("validation step 0") and stages.name == "validation before training":
            stages.switch("training steps + final validation")

    from omniret.training.config import load_config
    from omniret.training.data import load_examples, write_examples
    from omniret.training.runner import train

    data = Path(args.data)
    if args.queries:
        data = Path(args.workdir) / "train.jsonl"
        write_examples(data, load_examples(args.data)[:args.queries])
    eval_data = None
    if args.eval_data:
        held = load_examples(args.eval_data)
        random.Random(0).shuffle(held)
        eval_data = Path(args.workdir) / "eval.jsonl"
        write_examples(eval_data, held[:args.eval_queries])
    cfg = load_config(None, stage="rerank", model=args.model, data=data, out=Path(args.workdir) / "ce",
                      device=args.device, max_steps=args.max_steps, eval_data=eval_data,
                      eval_steps=args.max_steps if eval_data else None,
                      gradcache_chunk=args.gradcache_chunk if args.code is None else None)
    t0 = time.perf_counter()
    summary = train(cfg, log=log)
    seconds = time.perf_counter() - t0
    stages.switch("done")
    v = summary.get("validation") or {}
    metric = v.get("metric", "ndcg@10")
    figures = {"stages": stages.peaks, "steps": summary["steps"], "train_loss": summary["train_loss"],
               "seconds": seconds, "peak_rss_gb": max(p["rss_gb"] for p in stages.peaks.values())}
    if v.get("before") is not None:
        figures.update(metric=metric, before=v["before"][metric], best=v["best"][metric], last=v["last"][metric],
                       first_stage=(v.get("first_stage") or {}).get(metric))
    Path(args.result).write_text(json.dumps(figures), encoding="utf-8")


def run_side(side: str, args: argparse.Namespace, baseline_code: Path | None, work: Path) -> dict[str, Any]:
    """Run one side in a child process, killing it if its resident set passes the cap."""
    result = work / f"{side}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", "--data", str(args.data), "--model", args.model,
           "--max-steps", str(args.max_steps), "--eval-queries", str(args.eval_queries), "--result", str(result),
           "--queries", str(args.queries), *(["--gradcache-chunk", str(args.gradcache_chunk)]
                                             if args.gradcache_chunk is not None else []),
           "--workdir", str(work / side), "--device", args.device]
    if args.eval_data:
        cmd += ["--eval-data", str(args.eval_data)]
    if side == "baseline":
        cmd += ["--code", str(baseline_code)]
    subprocess.run(["rm", "-rf", str(work / side)], check=True)
    (work / side).mkdir(parents=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(work / f"{side}.log", "w"))  # noqa: SIM115
    over, seen = False, 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal over, seen
        while not stop.wait(0.2):
            try:
                rss = _status_kib("VmRSS", proc.pid)
            except (FileNotFoundError, ProcessLookupError):
                return
            seen = max(seen, rss)
            if rss > args.rss_cap_gb * 2**20:
                over = True
                proc.kill()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    rc = proc.wait()
    stop.set()
    watcher.join()
    if over:
        return {"side": side, "killed": f"resident set passed the {args.rss_cap_gb} GB cap",
                "peak_rss_gb": seen / 2**20}
    if rc != 0:
        raise SystemExit(f"{side} side failed (exit {rc}); see {work / f'{side}.log'}")
    return {"side": side, **json.loads(result.read_text(encoding="utf-8"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, required=False)
    ap.add_argument("--eval-data", type=Path, default=None)
    ap.add_argument("--eval-queries", type=int, default=100)
    ap.add_argument("--queries", type=int, default=0, help="train on the first N lines of --data (0: all)")
    ap.add_argument("--gradcache-chunk", type=int, default=None, help="the new side's pairs per forward "
                                                                       "(default: the training default)")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--max-steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=1, help="new, baseline pairs to run (alternating)")
    ap.add_argument("--sides", default="new,baseline")
    ap.add_argument("--baseline-rev", default="0c66670",
                    help="the commit whose omniret.training is the baseline (the last one before the bound)")
    ap.add_argument("--rss-cap-gb", type=float, default=12.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures here as JSON")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--code", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.data is None:
        raise SystemExit("--data is required (see the module docstring for building it)")
    with tempfile.TemporaryDirectory(prefix="train_memory_") as tmp:
        work = Path(tmp)
        code = work / "baseline-code"
        code.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline_rev, "training"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
        runs = []
        for _ in range(args.rounds):
            for side in args.sides.split(","):
                load = os.getloadavg()[0]
                fig = run_side(side, args, code, work)
                fig["load_before"] = load
                runs.append(fig)
                print(json.dumps(fig), flush=True)
    print(f"\nomniret train rerank --reranker {args.model} (defaults), {args.max_steps} steps on "
          f"{args.queries or 'all'} training queries, {args.eval_queries} validation queries, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average now "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for r in runs:
        if "killed" in r:
            print(f"{r['side']:>9}: KILLED, {r['killed']} (peak seen {r['peak_rss_gb']:.2f} GB)")
            continue
        per_stage = ", ".join(f"{k} {v['rss_gb']:.2f} GB" + (f" / CUDA {v['cuda_gb']:.2f} GB" if "cuda_gb" in v else "")
                              for k, v in r["stages"].items())
        line = f"{r['side']:>9}: peak RSS {r['peak_rss_gb']:.2f} GB ({per_stage}); loss {r['train_loss']:.4f}"
        if "best" in r:
            line += (f"; validation {r['metric']} before {r['before']:.4f} best {r['best']:.4f} last {r['last']:.4f}"
                     f" (first stage {r['first_stage']:.4f})")
        print(line + f"; {r['seconds']:.0f} s (load {r['load_before']:.1f} at start)")
    if args.out:
        args.out.write_text(json.dumps(runs, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
