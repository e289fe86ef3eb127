"""The independent side of the video fidelity tests: frames, sizes, pixels and prompt blocks computed
without omniret's input builder (decord decodes, torch resizes, numpy patchifies, the prompt is a string).

Shared by the embedder's and the reranker's tests, so both compare against the same outside computation.
Only ``smart_resize`` comes from omniret; its rounding is checked against hand-computed sizes in
``test_embed_qwen3_vl.py::test_smart_resize_hand_checked``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from omniret.base.media import smart_resize


def decord_frames(path: Path, idx: list[int]) -> np.ndarray:
    """Frames ``idx`` of a video file, ``(T, H, W, C)`` uint8, as the reference decodes them."""
    import decord

    return decord.VideoReader(str(path)).get_batch(idx).asnumpy()


def clip_resize(frames_thwc: np.ndarray, total_pixels: float) -> np.ndarray:
    """qwen-vl-utils' clip sizing (per-frame pixel bounds from ``total_pixels``), torch bicubic with
    antialias; float ``(T, C, H, W)`` in [0, 255]."""
    n, h, w, _ = frames_thwc.shape
    min_px = 128 * 32 * 32
    max_px = max(min(768 * 32 * 32, total_pixels / n * 2), int(min_px * 1.05))
    rh, rw = smart_resize(h, w, 32, min_px, max_px)
    x = torch.from_numpy(frames_thwc).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(rh, rw), mode="bicubic", align_corners=False, antialias=True)
    return x.clamp(0, 255).round().numpy()


def video_pixels(frames: np.ndarray) -> tuple[torch.Tensor, list[int]]:
    """frames: float (T, C, H, W) in [0, 255]; explicit numpy patchify (T padded to even)."""
    x = (frames.astype(np.float32) / 255.0 - 0.5) / 0.5
    if x.shape[0] % 2:
        x = np.concatenate([x, x[-1:]], 0)
    t, c, h, w = x.shape
    gt, gh, gw = t // 2, h // 16, w // 16
    p = x.reshape(gt, 2, c, gh // 2, 2, 16, gw // 2, 2, 16).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return torch.from_numpy(p.reshape(gt * gh * gw, c * 2 * 16 * 16).copy()), [gt, gh, gw]


def video_block(grid: list[int], times: list[float]) -> str:
    """The 4.57.3 video prompt: a time stamp and a vision block per temporal patch, no outer pair."""
    _, gh, gw = grid
    return "".join(f"<{t:.1f} seconds><|vision_start|>" + "<|video_pad|>" * (gh * gw // 4) + "<|vision_end|>"
                   for t in times)
