"""Data-parallel training on torch.distributed (gloo, 2 CPU processes under torchrun).

One optimiser step of 2 ranks × B equals one single-process step on the concatenated 2B batch — the same
loss and the same updated weights — for every stage and backbone, with and without GradCache and with the
Matryoshka loss; without gathering the negatives the loss differs. FSDP2 shards a Qwen3-VL tower on image and
video data where one rank's slice holds neither (its vision tower runs a stand-in), with LoRA, gradient
checkpointing and GradCache. Resume crosses world sizes and sharding (DCP checkpoints, also after SIGKILL), a
checkpoint cut while writing is never resumed from, a killed rank fails the run quickly, and bad launches fail
before training with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from omniret.training.config import load_config
from omniret.training.runner import train

BIN = Path(sys.executable).parent
WORKER = Path(__file__).with_name("dist_train_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def torchrun(args: list[str], nproc: int = 2, timeout: float = 240, **kw: Any) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1",
           f"--master-port={_free_port()}", *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout, **kw)


def run_matrix(spec: dict[str, dict[str, Any]], tmp_path: Path) -> dict[str, list[float]]:
    """Train every run of ``spec`` on 2 ranks (one launch); the loss histories by run name."""
    spec_file, result = tmp_path / "spec.json", tmp_path / "result.json"
    spec_file.write_text(json.dumps(spec, default=str), encoding="utf-8")
    proc = torchrun([str(WORKER), str(spec_file), str(result)])
    assert proc.returncode == 0, proc.stderr[-8000:]
    return json.loads(result.read_text(encoding="utf-8"))


def weights(out: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    tensors: dict[str, np.ndarray] = {}
    for f in sorted(out.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    return tensors


def assert_same_weights(a: Path, b: Path, changed_from: Path | None = None) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and wa
    worst = max(float(np.abs(wa[k].astype(np.float64) - wb[k]).max()) for k in wa)
    assert worst <= 1e-5, f"weights differ by {worst}"
    if changed_from is not None:
        w0 = weights(changed_from)
        moved = max(float(np.abs(wa[k].astype(np.float64) - w0[k]).max()) for k in wa)
        assert moved > 5e-5, "the step did not change the weights"


@pytest.fixture
def vl_data(tmp_path: Path) -> Path:
    colours = ["red", "green", "blue", "yellow"]
    for c in colours:
        Image.new("RGB", (32, 32), c).save(tmp_path / f"{c}.png")
    rows = [{"query": f"a {c} square", "positive": {"image": f"{c}.png", "text": c},
             "negatives": [colours[(i + 1) % 4] + " text"], "instruction": "Find the colour"}
            for i, c in enumerate(colours)]
    rows += [{"query": f"the colour {c}", "positive": f"{c} is a colour", "negatives": [f"not {c}"]}
             for c in colours]
    f = tmp_path / "train.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return f


def _cfg(model: Path, data: Path, out: Path, **kw: Any) -> dict[str, Any]:
    # lr 1e-4: Adam's first step is ~lr * g / (|g| + eps), so a weight whose gradient is near eps moves
    # by up to lr times the gradient's float-rounding difference between the two summation orders (gradient
    # clipping, on by default, scales gradients down toward eps)
    return dict(model=str(model), data=str(data), out=str(out), max_steps=1, lr=1e-4, warmup_ratio=0.0,
                hard_negatives=1, temperature=0.1, device="cpu", **kw)


def test_vl_two_ranks_equal_one_process_on_the_global_batch(tiny_vl_embedding: Path, vl_data: Path,
                                                            tmp_path: Path) -> None:
    runs = {
        "plain": dict(batch_size=4),
        "gradcache_matryoshka": dict(batch_size=4, gradcache_chunk=3, matryoshka_dims=[32]),
        "no_gather": dict(batch_size=4, gather_negatives=False),
    }
    spec = {name: _cfg(tiny_vl_embedding, vl_data, tmp_path / f"dist-{name}", **kw) for name, kw in runs.items()}
    dist_losses = run_matrix(spec, tmp_path)
    for name in ("plain", "gradcache_matryoshka"):
        kw = {**runs[name], "batch_size": 8}
        single = train(load_config(**_cfg(tiny_vl_embedding, vl_data, tmp_path / f"single-{name}", **kw)))
        assert abs(dist_losses[name][0] - single["history"][0]) <= 1e-5, (name, dist_losses[name], single["history"])
        assert_same_weights(tmp_path / f"dist-{name}", tmp_path / f"single-{name}", tiny_vl_embedding)
    # each rank scoring only its own 4 examples is a different (smaller-batch) loss
    assert abs(dist_losses["no_gather"][0] - dist_losses["plain"][0]) > 1e-3
    meta = json.loads((tmp_path / "dist-plain" / "omniret.json").read_text())["trained"]
    assert (meta["world_size"], meta["per_device_batch"], meta["global_batch"], meta["gather_negatives"]) \
        == (2, 4, 8, True)
    assert json.loads((tmp_path / "dist-no_gather" / "omniret.json").read_text())["trained"]["gather_negatives"] \
        is False


@pytest.fixture
def text_data(tmp_path: Path) -> Path:
    topics = ["cats", "rivers", "music", "bread", "stars", "trains", "paint", "chess"]
    rows = [{"query": f"tell me about {t}", "positive": f"{t} are described here in detail",
             "negatives": [f"nothing about {topics[(i + 3) % 8]}"], "scores": [2.0, -1.0 + 0.1 * i]}
            for i, t in enumerate(topics)]
    f = tmp_path / "text.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return f


def test_every_stage_and_backbone_two_ranks_equal_one_process(tiny_text_embedding: Path, tiny_vl_reranker: Path,
                                                              tiny_vl_embedding: Path, minilm_path: Path,
                                                              text_data: Path, tmp_path: Path,
                                                              copy_checkpoint: Any) -> None:
    # BERT's dropout draws different masks on two ranks than in one process; the step is exact without it
    minilm = copy_checkpoint(minilm_path)
    config = json.loads((minilm / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (minilm / "config.json").write_text(json.dumps(config))
    runs = {
        "text_plain": (tiny_text_embedding, dict(stage="embed")),
        "text_gradcache": (tiny_text_embedding, dict(stage="embed", gradcache_chunk=2, matryoshka_dims=[16])),
        "text_lora_checkpointing": (tiny_text_embedding, dict(stage="embed", lora=True, lora_r=4,
                                                              gradient_checkpointing=True)),
        "text_fsdp": (tiny_text_embedding, dict(stage="embed", fsdp=True, gradcache_chunk=3)),
        "text_fsdp_lora": (tiny_text_embedding, dict(stage="embed", fsdp=True, lora=True, lora_r=4,
                                                     gradient_checkpointing=True)),
        "vl_rerank_fsdp": (tiny_vl_reranker, dict(stage="rerank", fsdp=True)),
        "vl_rerank": (tiny_vl_reranker, dict(stage="rerank", rerank_loss="both")),
        "vl_distill": (tiny_vl_embedding, dict(stage="distill", matryoshka_dims=[32])),
        "minilm": (minilm, dict(stage="embed", log_steps=1)),
        "minilm_cached": (minilm, dict(stage="embed", log_steps=1, gradcache_chunk=2)),
    }

    def cfg(name: str, out: Path, batch: int) -> dict[str, Any]:
        model, kw = runs[name]
        return {**_cfg(model, text_data, out), "batch_size": batch, **kw}

    dist_losses = run_matrix({name: cfg(name, tmp_path / f"dist-{name}", 4) for name in runs}, tmp_path)
    for name, (model, _) in runs.items():
        # one process on the global batch, never sharded: FSDP must not change the step either
        single = train(load_config(**{**cfg(name, tmp_path / f"single-{name}", 8), "fsdp": False}))["history"]
        single = [h["loss"] if isinstance(h, dict) else h for h in single]
        assert abs(dist_losses[name][0] - single[0]) <= 1e-5, (name, dist_losses[name], single)
        assert_same_weights(tmp_path / f"dist-{name}", tmp_path / f"single-{name}", model)
        meta = json.loads((tmp_path / f"dist-{name}" / "omniret.json").read_text())["trained"]
        assert (meta["world_size"], meta["global_batch"]) == (2, 8), name
        assert meta.get("fsdp", False) == ("fsdp" in name), name


@pytest.fixture
def media_data(tmp_path: Path) -> Path:
    """8 lines whose first global batch of 8 (seed 42) gives rank 0 every image and a video, and rank 1 text only."""
    from omniret.training.distributed import epoch_batches

    colours = ["red", "green", "blue", "yellow"]
    for c in colours:
        Image.new("RGB", (32, 32), c).save(tmp_path / f"{c}.png")
    Image.new("RGB", (64, 64), "white").save(tmp_path / "white.png")
    media = [{"query": f"a {c} square", "positive": {"image": f"{c}.png", "text": c},
              "negatives": [colours[(i + 1) % 4] + " text"], "instruction": "Find the colour"}
             for i, c in enumerate(colours[:3])]
    media.append({"query": "a clip fading to white", "positive": {"video": ["yellow.png", "white.png"]},
                  "negatives": ["a still photograph"]})
    text = [{"query": f"the colour {c}", "positive": f"{c} is a colour", "negatives": [f"not {c}"]} for c in colours]
    order = epoch_batches(8, 8, seed=42, epoch=0)[0]
    rows: list[dict[str, Any]] = [{}] * 8
    for pos, row in zip(order, media + text, strict=True):
        rows[pos] = row
    f = tmp_path / "media.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return f


def test_fsdp_vl_on_images_and_video_where_one_rank_has_none_equals_one_process(
        tiny_vl_embedding: Path, tiny_vl_reranker: Path, media_data: Path, tmp_path: Path) -> None:
    """The case that hung: rank 1's slice holds no image and no video, so only the stand-ins make it run the
    sharded vision blocks' all-gathers and reduce-scatters that rank 0 runs for its media (the worker's
    collective timeout turns a regression into a failure, not a hang)."""
    from omniret.training.data import load_examples
    from omniret.training.distributed import DistContext, epoch_batches, rank_slice

    examples = load_examples(media_data)
    batch = epoch_batches(len(examples), 8, seed=42, epoch=0)[0]
    slices = [[examples[i] for i in rank_slice(batch, DistContext(r, 2), batch)] for r in range(2)]
    kinds = [{m for ex in sl for it in (ex.query, *ex.candidates[:2]) for m in it.modalities} for sl in slices]
    assert kinds == [{"text", "image", "video"}, {"text"}]
    runs = {
        "embed": (tiny_vl_embedding, dict(stage="embed")),
        "embed_lora_checkpointing_gradcache": (tiny_vl_embedding, dict(stage="embed", lora=True, lora_r=4,
                                                                      gradient_checkpointing=True,
                                                                      gradcache_chunk=3)),
        "rerank": (tiny_vl_reranker, dict(stage="rerank")),
    }

    def cfg(name: str, out: Path, batch: int, fsdp: bool) -> dict[str, Any]:
        model, kw = runs[name]
        return {**_cfg(model, media_data, out), "batch_size": batch, "fsdp": fsdp, **kw}

    dist_losses = run_matrix({name: cfg(name, tmp_path / f"dist-{name}", 4, True) for name in runs}, tmp_path)
    for name, (model, _) in runs.items():
        single = train(load_config(**cfg(name, tmp_path / f"single-{name}", 8, False)))["history"]
        assert abs(dist_losses[name][0] - single[0]) <= 1e-5, (name, dist_losses[name], single)
        assert_same_weights(tmp_path / f"dist-{name}", tmp_path / f"single-{name}", model)
        meta = json.loads((tmp_path / f"dist-{name}" / "omniret.json").read_text())["trained"]
        assert (meta["world_size"], meta["global_batch"], meta["fsdp"]) == (2, 8, True), name


def _cli(model: Path, data: Path | str, out: Path, *extra: str) -> list[str]:
    """``--no-python omniret train embed …`` for a launcher (drop the first element to run it directly)."""
    return ["--no-python", "omniret", "train", "embed", "--model", str(model), "--data", str(data), "--out", str(out),
            "--lr", "1e-3", "--hard-negatives", "1", "--device", "cpu", *extra]


def _history(out: Path) -> list[float]:
    return json.loads((out / "train_history.json").read_text())["loss"]


def test_resume_on_two_and_on_one_rank_reproduces_the_run_and_only_rank_0_writes(
        tiny_text_embedding: Path, text_data: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    logs = tmp_path / "logs"
    # 8 examples, global batch 4: 4 steps cross an epoch boundary; a checkpoint after step 2
    proc = torchrun(["--log-dir", str(logs), "--redirects", "3",
                     *_cli(tiny_text_embedding, text_data, full, "--global-batch-size", "4", "--max-steps", "4",
                           "--save-steps", "2")])
    assert proc.returncode == 0, proc.stderr[-4000:]
    uninterrupted = _history(full)
    assert len(uninterrupted) == 4
    rank_err = {int(p.parent.name): p.read_text() for p in logs.rglob("stderr.log")}
    assert "data-parallel: world_size=2 (backend gloo), per-device batch 2, global batch 4, gather_negatives=true" \
        in rank_err[0]
    assert "training embed" in rank_err[0]
    assert "data-parallel" not in rank_err[1] and "training embed" not in rank_err[1]
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == ["checkpoint-2"]

    for ranks in (2, 1):
        out = tmp_path / f"resumed-{ranks}"
        shutil.copytree(full / "checkpoints", out / "checkpoints")
        args = _cli(tiny_text_embedding, text_data, out, "--max-steps", "4", "--resume")
        if ranks == 2:  # resumed under accelerate's launcher (torchrun started the run)
            proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                                   "--num_processes=2", f"--main_process_port={_free_port()}", "--num_machines=1",
                                   "--mixed_precision=no", "--dynamo_backend=no", "--no_python", *args[1:]],
                                  env=_env(), capture_output=True, text=True, timeout=240)
        else:
            proc = subprocess.run(args[1:], env=_env(), capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert json.loads((out / "train_history.json").read_text())["step"] == [3, 4]
        np.testing.assert_allclose(_history(out), uninterrupted[2:], rtol=1e-5, err_msg=f"resumed on {ranks}")
        meta = json.loads((out / "omniret.json").read_text())["trained"]
        assert (meta["world_size"], meta["per_device_batch"], meta["global_batch"]) == (ranks, 4 // ranks, 4)


def test_batch_plan_is_global_and_independent_of_the_world_size() -> None:
    from omniret.errors import ConfigError
    from omniret.training import distributed as dist

    assert dist.global_batch_plan(4, 2, None) == (4, 8)
    assert dist.global_batch_plan(4, 2, 6) == (3, 6)
    with pytest.raises(ConfigError, match="global batch 5 does not divide into 2 equal per-rank slices"):
        dist.global_batch_plan(4, 2, 5)
    batches = dist.epoch_batches(10, 4, seed=7, epoch=1)
    assert [len(b) for b in batches] == [4, 4, 2] and sorted(sum(batches, [])) == list(range(10))
    assert batches == dist.epoch_batches(10, 4, seed=7, epoch=1) != dist.epoch_batches(10, 4, seed=7, epoch=2)
    ranks = [dist.rank_slice(batches[0], dist.DistContext(r, 2), batches[0]) for r in range(2)]
    assert ranks[0] + ranks[1] == batches[0]
    # a short last batch that does not split evenly is padded with the epoch's first examples
    three = [dist.rank_slice(batches[2], dist.DistContext(r, 3), batches[0]) for r in range(3)]
    assert three == [[batches[2][0]], [batches[2][1]], [batches[0][0]]]


def test_bad_launches_fail_before_training_with_the_reason(tiny_text_embedding: Path, text_data: Path,
                                                           tmp_path: Path) -> None:
    proc = torchrun(_cli(tiny_text_embedding, text_data, tmp_path / "odd", "--global-batch-size", "5"))
    assert proc.returncode != 0
    assert "global batch 5 does not divide into 2 equal per-rank slices" in " ".join(proc.stderr.split())
    assert "training embed" not in proc.stderr and not (tmp_path / "odd" / "checkpoints").exists()

    # two machines (nodes) of one rank each, the second without the data file: every rank stops and says which
    port = _free_port()
    nodes = []
    for node in range(2):
        cwd = tmp_path / f"node{node}"
        cwd.mkdir()
        if node == 0:
            shutil.copy(text_data, cwd / "train.jsonl")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={node}",
               "--nproc-per-node=1", "--master-addr=127.0.0.1", f"--master-port={port}",
               *_cli(tiny_text_embedding, "train.jsonl", tmp_path / f"out{node}")]
        nodes.append(subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outputs = [p.communicate(timeout=240) for p in nodes]
    for p, (_, err) in zip(nodes, outputs, strict=True):
        assert p.returncode != 0
        assert "loading the training data failed on 1 of 2 ranks; rank 1: train.jsonl: no such data file" \
            in " ".join(err.split()), err[-3000:]
        assert "training embed" not in err


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGSTOP"])
def test_a_dead_or_hung_rank_fails_the_run_within_the_timeout(tiny_text_embedding: Path, text_data: Path,
                                                              tmp_path: Path, signal_name: str) -> None:
    """Ranks started as torchrun starts them (env:// variables), without its supervisor: rank 0 must notice by
    itself that rank 1 died (kill -9: the socket closes) or hung (SIGSTOP: the collective timeout)."""
    import signal
    import time

    port = _free_port()
    procs, logs = [], []
    for rank in range(2):
        env = dict(_env(), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        logs.append(tmp_path / f"rank{rank}.err")
        with logs[-1].open("w") as err_file:
            procs.append(subprocess.Popen(
                _cli(tiny_text_embedding, text_data, tmp_path / "out", "--max-steps", "100000", "--batch-size", "2",
                     "--dist-timeout", "15")[1:],
                env=env, stdout=subprocess.DEVNULL, stderr=err_file, text=True))
    try:
        deadline = time.monotonic() + 180
        # wait until the ranks train (rank 0 announced the run and stepped), then take rank 1 away
        while "data-parallel" not in logs[0].read_text() and time.monotonic() < deadline:
            assert procs[0].poll() is None, logs[0].read_text()[-3000:]
            time.sleep(1)
        time.sleep(5)
        procs[1].send_signal(getattr(signal, signal_name))
        t0 = time.monotonic()
        procs[0].wait(timeout=120)
        waited = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    err = " ".join(logs[0].read_text().split())
    assert procs[0].returncode != 0
    assert "rank 0 of 2: lost the other ranks during step" in err, err[-3000:]
    assert waited < 60, waited


def test_clip_grad_norm_matches_torch_on_plain_tensors() -> None:
    import torch

    from omniret.training.distributed import clip_grad_norm

    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(3, 4)) for _ in range(3)]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    for p, q in zip(ours, theirs, strict=True):
        g = torch.randn_like(p) * 5
        p.grad, q.grad = g.clone(), g.clone()
    total = clip_grad_norm(ours, 1.0)
    assert total == pytest.approx(float(torch.nn.utils.clip_grad_norm_(theirs, 1.0)), rel=1e-6) and total > 1.0
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p.grad, q.grad)
    assert float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in ours]))) == pytest.approx(1.0, rel=1e-5)


def test_sharded_run_killed_after_a_checkpoint_resumes_on_one_and_two_ranks(
        tiny_vl_embedding: Path, media_data: Path, tmp_path: Path) -> None:
    """A sharded 2-rank run, SIGKILLed once a DCP checkpoint is complete, resumes on 1 process and on 2 sharded
    ranks with the uninterrupted run's remaining losses and final weights; a 1-process checkpoint resumes on 2
    sharded ranks; the folder of a write cut short is never resumed from."""
    import contextlib
    import signal
    import time

    import psutil

    # lr 1e-4 as in _cfg: sharded and unsharded sum in different orders, and over 8 steps Adam amplifies
    # the rounding of gradients near its eps (at 1e-3 the losses drift apart by ~1e-4)
    common = dict(model=str(tiny_vl_embedding), data=str(media_data), lr=1e-4, hard_negatives=1,
                  temperature=0.1, device="cpu", global_batch_size=4, max_steps=10, save_total_limit=1)
    # the uninterrupted run, in one process (2 sharded ranks take the same steps: the test above)
    whole = tmp_path / "whole"
    reference = train(load_config(**common, out=str(whole), save_steps=2))["history"]
    assert [p.name for p in (whole / "checkpoints").iterdir()] == ["checkpoint-8"]  # pruned to the newest

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
           f"--master-port={_free_port()}", "-m", "omniret.cli", "train", "embed", "--model", str(tiny_vl_embedding),
           "--data", str(media_data), "--out", str(killed), "--lr", "1e-4", "--hard-negatives", "1",
           "--temperature", "0.1", "--device", "cpu", "--global-batch-size", "4", "--max-steps", "10",
           "--save-steps", "2", "--save-total-limit", "1", "--fsdp", "--dist-timeout", "60"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def kill_run() -> None:
        # torchrun starts each rank in a session of its own: kill the ranks, then the launcher
        for p in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)

    try:
        deadline = time.monotonic() + 180
        while not list((killed / "checkpoints").glob("checkpoint-*/state.json")):
            assert proc.poll() is None, proc.communicate()[1][-4000:]
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.05)
        kill_run()
    finally:
        if proc.poll() is None:
            kill_run()
        proc.communicate()
    # the killed run has 8 steps to go after its first checkpoint: the poll above is slower only on a starved machine
    assert not (killed / "omniret.json").exists(), "the run finished before it was killed"
    (done,) = [p for p in (killed / "checkpoints").iterdir() if not p.name.startswith(".")]
    step = int(done.name.split("-")[1])
    # a later checkpoint whose write was cut short (no state.json yet) is ignored, and the next save clears it
    cut = killed / "checkpoints" / f".checkpoint-{step + 1}.partial"
    shutil.copytree(done, cut, ignore=shutil.ignore_patterns("state.json", ".metadata"))

    outs = {name: tmp_path / name for name in ("one_from_two", "two_from_two", "two_from_one")}
    for name, source in (("one_from_two", killed), ("two_from_two", killed), ("two_from_one", whole)):
        shutil.copytree(source / "checkpoints", outs[name] / "checkpoints")
    # one process, launched with the sharded run's flags: nothing to shard over, it trains unsharded
    one = train(load_config(**common, out=str(outs["one_from_two"]), fsdp=True, resume=True, save_steps=2))
    assert one["steps"] == 10 and not one["model"].sharded
    assert not (outs["one_from_two"] / "checkpoints" / cut.name).exists()
    two = run_matrix({name: {**common, "out": str(outs[name]), "fsdp": True, "resume": True, "dist_timeout": 60}
                      for name in ("two_from_two", "two_from_one")}, tmp_path)
    for name, losses, first in (("one_from_two", one["history"], step), ("two_from_two", two["two_from_two"], step),
                                ("two_from_one", two["two_from_one"], 8)):
        assert json.loads((outs[name] / "train_history.json").read_text())["step"] == list(range(first + 1, 11))
        np.testing.assert_allclose(losses, reference[first:], rtol=1e-5, err_msg=name)
        assert_same_weights(outs[name], whole)
