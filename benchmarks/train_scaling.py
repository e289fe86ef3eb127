"""Data-parallel training throughput and loss curve: 1 rank vs N ranks on the same global batch, same run.

Each side is ``omniret train embed`` on the same data, global batch and seed: once as one process, once under
``torchrun --nproc-per-node N``; the sides alternate (A, B, A, B, …) so machine load hits both alike. It
prints examples/s per side (the steady-state steps, the first one excluded as warm-up) with the load average,
and the two loss curves side by side: with negatives gathered across ranks they are the same curve (the
N-rank step is the single-process step on the whole global batch), so the speed-up costs nothing in recipe.

CPU (the tiny random Qwen3-VL, 1 thread per rank, so one process on 2 threads vs 2 ranks on 1 each):

    python benchmarks/train_scaling.py --ranks 2 --threads 2

GPU machine, 1 vs 8 GPUs with a random Qwen3-VL-Embedding-2B (the published size; random weights cost the
same time), bf16, LoRA off, gradient checkpointing on; the figures go to benchmarks/RESULTS.md:

    python benchmarks/train_scaling.py --size 2b --ranks 8 --global-batch 64 --steps 20 --device cuda \\
        --gradient-checkpointing --out $OUT/train_scaling.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WORDS = ["river", "mountain", "city", "music", "science", "history", "energy", "market", "network", "light",
         "water", "animal", "plant", "garden", "kitchen", "travel", "winter", "summer", "ocean", "forest", "bridge",
         "camera", "signal", "protein", "galaxy", "engine", "battery", "library", "museum"]


def write_data(path: Path, n: int) -> None:
    """``n`` text examples with one hard negative each (distinct strings, so no accidental duplicates)."""
    import random

    rng = random.Random(0)
    rows = []
    for i in range(n):
        a, b, c = rng.sample(WORDS, 3)
        rows.append({"query": f"q{i}: {a} {b}", "positive": f"doc {i} about {a} and {b} near {c}",
                     "negatives": [f"doc {i} about {c} only"]})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")


def build_model(out: Path, size: str, device: str) -> Path:
    """The tiny test checkpoint, or a random one of the published 2B size (``gpu_throughput.build_checkpoint``)."""
    if size == "tiny":
        from omniret.testing import build_tiny_qwen3_vl

        return build_tiny_qwen3_vl(out, seed=0)
    import torch

    spec = importlib.util.spec_from_file_location("gpu_throughput", REPO / "benchmarks" / "gpu_throughput.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_checkpoint(out, size, device=device, dtype=torch.bfloat16, seed=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_side(ranks: int, threads: int, args: argparse.Namespace, model: Path, data: Path, out: Path) -> dict[str, Any]:
    """One training run; its ``train_history.json`` (loss and seconds per step)."""
    shutil.rmtree(out, ignore_errors=True)
    train = ["omniret", "train", "embed", "--model", str(model), "--data", str(data), "--out", str(out),
             "--global-batch-size", str(args.global_batch), "--max-steps", str(args.steps), "--lr", "1e-4",
             "--hard-negatives", "1", "--device", args.device, "--max-length", str(args.max_length)]
    if args.gradient_checkpointing:
        train.append("--gradient-checkpointing")
    if ranks > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={ranks}",
               "--master-addr=127.0.0.1", f"--master-port={free_port()}", "--no-python", *train]
    else:
        cmd = [str(Path(sys.executable).parent / "omniret"), *train[1:]]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads((out / "train_history.json").read_text(encoding="utf-8"))


def rate(history: dict[str, Any]) -> float:
    """Examples per second over the steps after the first (model warm-up, allocator, first gather)."""
    seconds = history["seconds"][1:] or history["seconds"]
    return history["global_batch"] * len(seconds) / sum(seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "2b"], default="tiny")
    ap.add_argument("--ranks", type=int, default=2, help="ranks of the data-parallel side")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of the single process (ranks get "
                                                           "threads // ranks each)")
    ap.add_argument("--global-batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2, help="A,B alternations")
    ap.add_argument("--examples", type=int, default=256)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="omniret-scaling-"))
    model = build_model(tmp / "model", args.size, args.device)
    data = tmp / "train.jsonl"
    write_data(data, args.examples)
    sides = {1: args.threads, args.ranks: max(args.threads // args.ranks, 1)}
    results: dict[int, list[dict[str, Any]]] = {r: [] for r in sides}
    loads = []
    for i in range(args.rounds):
        for ranks, threads in sides.items():
            results[ranks].append(run_side(ranks, threads, args, model, data, tmp / f"out-{ranks}-{i}"))
            loads.append(os.getloadavg()[0])
    figures: dict[str, Any] = {"size": args.size, "device": args.device, "global_batch": args.global_batch,
                               "steps": args.steps, "load_avg_1min": loads}
    print(f"{args.size} Qwen3-VL, global batch {args.global_batch}, {args.steps} steps, {args.rounds} rounds "
          f"(A,B alternating), load average during the runs {min(loads):.1f}-{max(loads):.1f}")
    for ranks, threads in sides.items():
        rates = [rate(h) for h in results[ranks]]
        figures[f"ranks_{ranks}"] = {"threads_per_rank": threads, "examples_per_s": rates}
        label = "1 process (baseline)" if ranks == 1 else f"{ranks} ranks, gathered"
        print(f"  {label:<24} {threads} thread(s)/rank: " + ", ".join(f"{r:.1f}" for r in rates)
              + f" examples/s (best {max(rates):.1f})")
    single, multi = results[1][0]["loss"], results[args.ranks][0]["loss"]
    worst = max(abs(a - b) for a, b in zip(single, multi, strict=True))
    figures["loss_1_rank"], figures[f"loss_{args.ranks}_ranks"], figures["loss_max_abs_diff"] = single, multi, worst
    print(f"  step  loss 1 rank  loss {args.ranks} ranks")
    for step, (a, b) in enumerate(zip(single, multi, strict=True), 1):
        print(f"  {step:4d}  {a:11.6f}  {b:12.6f}")
    print(f"  largest loss difference over the curve: {worst:.2e}")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
