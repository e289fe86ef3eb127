"""Run by ``torchrun`` in the distributed tests: train each run of a JSON spec inside one process group.

``python dist_train_worker.py SPEC RESULT``: SPEC maps a run name to ``load_config`` keywords; every rank
trains each run in turn (one group, so the matrix costs one launch), and rank 0 writes each run's loss
history to RESULT.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from omniret.training.config import load_config
from omniret.training.runner import train


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    results = {}
    for name, kwargs in spec.items():
        history = train(load_config(**kwargs))["history"]
        # sentence-transformers runs report Hugging Face's log records
        results[name] = [h["loss"] if isinstance(h, dict) else h for h in history]
    if dist.get_rank() == 0:
        Path(sys.argv[2]).write_text(json.dumps(results), encoding="utf-8")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
