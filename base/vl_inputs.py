"""Qwen3-VL model inputs, built by omniret itself: prompt text, token ids, pixel patches, grids.

Shared by the embedder and the reranker. omniret owns this pipeline instead of calling
``Qwen3VLProcessor`` because (a) transformers 5 renders video prompts with an extra outer
``<|vision_start|>…<|vision_end|>`` pair while the published models were run with transformers 4.57.3
(no outer pair), (b) transformers 5's video processor needs torchvision, and (c) preparing one item at a
time lets media decoding run in worker threads and bad items fail alone. Every step follows
qwen-vl-utils 0.0.14 and the 4.57.3 processor exactly (see ARCHITECTURE.md, "Fidelity rules").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from omniret.base.media import (
    clip_max_pixels,
    fetch_image,
    read_video,
    resize_clip,
    sample_frame_list,
    smart_resize,
)
from omniret.errors import ItemError
from omniret.types import Item

#: frame lists: qwen-vl-utils calls ``fetch_image(frame, image_factor)`` with the *factor* (32) as the
#: patch size, so each frame is snapped to multiples of 64 with its image defaults (4 and 16384 tokens).
FRAME_LIST_FACTOR = 64
FRAME_LIST_MIN_PIXELS = 4 * 64 * 64
FRAME_LIST_MAX_PIXELS = 16384 * 64 * 64
FRAME_LIST_FPS = 2.0
#: video files: the reference passes no total_pixels, so qwen-vl-utils' default applies.
FILE_TOTAL_PIXELS = 128000 * 32 * 32 * 0.9


@dataclass
class VLOptions:
    """The reference constructor's preprocessing knobs (same names and defaults)."""

    max_length: int = 8192
    min_pixels: int = 4 * 32 * 32
    max_pixels: int = 1800 * 32 * 32
    total_pixels: int = 10 * 768 * 32 * 32
    fps: float = 1.0
    max_frames: int = 64
    allow_remote: bool = False


# -- parts ----------------------------------------------------------------------------------------------
@dataclass
class TextPart:
    """Literal text inside a turn."""

    text: str


@dataclass
class ImagePart:
    """One image, already patchified: ``pixel_values`` float32 ``(t*h*w, C*T*p*p)``, ``grid_thw`` (t, h, w)."""

    pixel_values: Any
    grid_thw: tuple[int, int, int]


@dataclass
class VideoPart:
    """One video, patchified like the 4.57.3 video processor; ``timestamps`` one per temporal group (s)."""

    pixel_values: Any
    grid_thw: tuple[int, int, int]
    timestamps: list[float]


Part = TextPart | ImagePart | VideoPart


@dataclass
class Encoded:
    """One sequence's token ids and the vision inputs its placeholders stand for, in order."""

    input_ids: list[int]
    images: list[ImagePart] = field(default_factory=list)
    videos: list[VideoPart] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def num_patches(self) -> int:
        """Vision patches (rows of pixel values) this sequence sends through the vision tower."""
        return sum(int(np.prod(p.grid_thw)) for p in (*self.images, *self.videos))

    @property
    def pixel_values(self) -> Any:
        return _cat([p.pixel_values for p in self.images])

    @property
    def image_grid_thw(self) -> Any:
        return _grid([p.grid_thw for p in self.images])

    @property
    def pixel_values_videos(self) -> Any:
        return _cat([p.pixel_values for p in self.videos])

    @property
    def video_grid_thw(self) -> Any:
        return _grid([p.grid_thw for p in self.videos])


def _cat(xs: list[Any]) -> Any:
    import torch

    return torch.cat(xs, dim=0) if xs else None


def _grid(gs: list[tuple[int, int, int]]) -> Any:
    import torch

    return torch.tensor(gs, dtype=torch.long) if gs else None


# -- truncation -----------------------------------------------------------------------------------------
def truncate_right(ids: list[int], max_length: int) -> list[int]:
    """Plain right truncation (the embedder's, as the tokenizer's ``truncation=True``)."""
    return list(ids[:max_length])


def truncate_keep_special(ids: list[int], max_length: int, special_ids: set[int] | frozenset[int],
                          keep_last: int = 5) -> list[int]:
    """The reranker's truncation: keep every special token and the last ``keep_last`` tokens, drop the
    excess non-special tokens from the end of the rest (the reference's ``truncate_tokens_optimized`` on
    ``ids[:-keep_last]`` with ``max_length - keep_last``, then ``+ ids[-keep_last:]``)."""
    if len(ids) <= max_length:
        return list(ids)
    head, tail = ids[:-keep_last] if keep_last else ids, ids[-keep_last:] if keep_last else []
    budget = max_length - keep_last
    num_special = sum(1 for t in head if t in special_ids)
    keep_plain = budget - num_special
    out: list[int] = []
    kept = 0
    for t in head:
        if t in special_ids:
            out.append(t)
        elif kept < keep_plain:
            out.append(t)
            kept += 1
    return out + list(tail)


# -- pixels ---------------------------------------------------------------------------------------------
def normalize(x: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    """Rescale by 1/255 and normalise, fused as transformers' fast processors do: ``(x - 255m) / 255s``."""
    import torch

    m = torch.tensor([v * 255.0 for v in mean], dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor([v * 255.0 for v in std], dtype=torch.float32).view(-1, 1, 1)
    return (x.to(torch.float32) - m) / s


def normalize_patches(patches: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    """``normalize`` applied after patchifying: rows are ``(C, T*p*p)`` channel-major, so the same
    per-channel formula gives bit-identical pixels while the patch copy moves uint8 instead of float32."""
    import torch

    n, width = patches.shape
    c = len(mean)
    m = torch.tensor([v * 255.0 for v in mean], dtype=torch.float32).view(1, c, 1)
    s = torch.tensor([v * 255.0 for v in std], dtype=torch.float32).view(1, c, 1)
    out = patches.to(torch.float32).view(n, c, width // c)
    out.sub_(m).div_(s)
    return out.view(n, width)


def patchify_image(x: Any, *, patch_size: int, merge_size: int, temporal_patch_size: int) -> tuple[Any, tuple[int, int, int]]:
    """Normalised image ``(C, H, W)`` -> ``((gh*gw), C*T*p*p)`` patches and grid (Qwen2-VL image layout)."""
    c, h, w = x.shape
    p, m, tp = patch_size, merge_size, temporal_patch_size
    gh, gw = h // p, w // p
    frames = x.unsqueeze(0).expand(tp, c, h, w)
    patches = frames.reshape(1, tp, c, gh // m, m, p, gw // m, m, p)
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return patches.reshape(gh * gw, c * tp * p * p).contiguous(), (1, gh, gw)


def patchify_video(x: Any, *, patch_size: int, merge_size: int, temporal_patch_size: int) -> tuple[Any, tuple[int, int, int]]:
    """Normalised clip ``(T, C, H, W)`` -> patches and grid (4.57.3 Qwen3-VL video processor layout)."""
    import torch

    p, m, tp = patch_size, merge_size, temporal_patch_size
    if x.shape[0] % tp:
        x = torch.cat([x, x[-1:].expand(tp - x.shape[0] % tp, *x.shape[1:])], dim=0)
    t, c, h, w = x.shape
    gt, gh, gw = t // tp, h // p, w // p
    patches = x.reshape(1, gt, tp, c, gh // m, m, p, gw // m, m, p)
    patches = patches.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    return patches.reshape(gt * gh * gw, c * tp * p * p).contiguous(), (gt, gh, gw)


def video_timestamps(indices: Sequence[int], fps: float, merge_size: int = 2) -> list[float]:
    """Per temporal group: mean time of its first and last frame (4.57.3 ``_calculate_timestamps``)."""
    idx = list(indices)
    if len(idx) % merge_size:
        idx.extend(idx[-1] for _ in range(merge_size - len(idx) % merge_size))
    ts = [i / fps for i in idx]
    return [(ts[i] + ts[i + merge_size - 1]) / 2 for i in range(0, len(ts), merge_size)]


# -- positions ------------------------------------------------------------------------------------------
def rope_positions(input_ids: Sequence[int], image_grids: Sequence[tuple[int, int, int]],
                   video_grids: Sequence[tuple[int, int, int]], *, image_token_id: int, video_token_id: int,
                   merge_size: int) -> Any:
    """3-D MRoPE position ids ``(3, L)`` of one unpadded sequence, as transformers 4.57.3 computes them.

    Text advances all three axes together; a vision block takes ``(t, h, w)`` grid positions offset by
    the text before it. Each video frame group is its own block (``t = 1``; time is in the timestamps).
    omniret passes these to the model itself, so padding and the installed transformers version cannot
    change them (transformers 5 wants ``mm_token_type_ids`` instead).
    """
    import torch

    tokens = list(input_ids)
    blocks_img = list(image_grids)
    blocks_vid = [(1, h, w) for (t, h, w) in video_grids for _ in range(t)]
    chunks: list[Any] = []
    st = 0
    next_pos = 0
    ii = vi = 0
    n_img = sum(1 for t in tokens if t == image_token_id)
    n_vid = sum(1 for t in tokens if t == video_token_id)
    for _ in range(len(blocks_img) + len(blocks_vid)):
        ed_img = tokens.index(image_token_id, st) if ii < len(blocks_img) and n_img else len(tokens) + 1
        ed_vid = tokens.index(video_token_id, st) if vi < len(blocks_vid) and n_vid else len(tokens) + 1
        if ed_img < ed_vid:
            t, h, w = blocks_img[ii]
            ii += 1
            ed = ed_img
        else:
            t, h, w = blocks_vid[vi]
            vi += 1
            ed = ed_vid
        gh, gw = h // merge_size, w // merge_size
        text_len = ed - st
        chunks.append(torch.arange(text_len).view(1, -1).expand(3, -1) + next_pos)
        t_idx = torch.arange(t).view(-1, 1).expand(-1, gh * gw).flatten()
        h_idx = torch.arange(gh).view(1, -1, 1).expand(t, -1, gw).flatten()
        w_idx = torch.arange(gw).view(1, 1, -1).expand(t, gh, -1).flatten()
        block = torch.stack([t_idx, h_idx, w_idx]) + text_len + next_pos
        chunks.append(block)
        next_pos = int(block.max()) + 1 if block.numel() else next_pos + text_len
        st = ed + t * gh * gw
    if st < len(tokens):
        chunks.append(torch.arange(len(tokens) - st).view(1, -1).expand(3, -1) + next_pos)
    if not chunks:
        return torch.zeros((3, 0), dtype=torch.long)
    return torch.cat(chunks, dim=1).long()


# -- the builder ----------------------------------------------------------------------------------------
class Qwen3VLInputBuilder:
    """Turns items into Qwen3-VL chat inputs exactly as the reference (transformers 4.57.3) does.

    ``parts(item)`` loads and patchifies the item's media (videos, then images, then texts; ``NULL`` for an
    empty item); ``encode(messages)`` renders and tokenises a chat; ``collate`` pads a batch into the
    tensors ``Qwen3VLModel(**inputs)`` takes.
    """

    def __init__(self, checkpoint_path: str | Path, options: VLOptions | None = None, *, tokenizer: Any = None) -> None:
        from transformers import AutoTokenizer

        self.path = str(checkpoint_path)
        self.options = options or VLOptions()
        self.tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(self.path)
        cfg: dict[str, Any] = {}
        pp = Path(self.path) / "preprocessor_config.json"
        if pp.is_file():
            cfg = json.loads(pp.read_text(encoding="utf-8"))
        self.patch_size = int(cfg.get("patch_size", 16))
        self.merge_size = int(cfg.get("merge_size", 2))
        self.temporal_patch_size = int(cfg.get("temporal_patch_size", 2))
        self.image_mean = list(cfg.get("image_mean", [0.5, 0.5, 0.5]))
        self.image_std = list(cfg.get("image_std", [0.5, 0.5, 0.5]))
        self.factor = self.patch_size * self.merge_size
        tok = self.tokenizer
        self.image_token_id = tok.convert_tokens_to_ids("<|image_pad|>")
        self.video_token_id = tok.convert_tokens_to_ids("<|video_pad|>")
        self.vision_start_id = tok.convert_tokens_to_ids("<|vision_start|>")
        self.vision_end_id = tok.convert_tokens_to_ids("<|vision_end|>")
        self.pad_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
        self.special_ids = frozenset(tok.all_special_ids)

    # -- media -> parts -----------------------------------------------------------------------------
    def image_part(self, obj: Any, *, index: int | None = None, item_id: Any = None) -> ImagePart:
        """Load, resize (factor 32, min/max pixels from the options) and patchify one image."""
        import torch

        o = self.options
        image = fetch_image(obj, factor=self.factor, min_pixels=o.min_pixels, max_pixels=o.max_pixels,
                            index=index, item_id=item_id, allow_remote=o.allow_remote)
        x = torch.from_numpy(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy())
        pv, grid = patchify_image(x, patch_size=self.patch_size, merge_size=self.merge_size,
                                  temporal_patch_size=self.temporal_patch_size)
        pv = normalize_patches(pv, self.image_mean, self.image_std)
        return ImagePart(pixel_values=pv, grid_thw=grid)

    def video_part(self, video: Any, *, fps: float | None = None, max_frames: int | None = None,
                   video_start: float | None = None, video_end: float | None = None, index: int | None = None,
                   item_id: Any = None) -> VideoPart:
        """A video file (sampled at ``fps``, at most ``max_frames``) or a frame list, patchified."""
        import torch

        o = self.options
        if isinstance(video, (list, tuple)):
            frames = sample_frame_list(list(video), o.max_frames)
            if not frames:
                raise ItemError.for_item(index, item_id, "video frame list is empty")
            images = [fetch_image(f, factor=FRAME_LIST_FACTOR, min_pixels=FRAME_LIST_MIN_PIXELS,
                                  max_pixels=FRAME_LIST_MAX_PIXELS, index=index, item_id=item_id,
                                  allow_remote=o.allow_remote) for f in frames]
            if len({im.size for im in images}) > 1:
                raise ItemError.for_item(index, item_id, "video frames have different sizes after resizing "
                                                         f"({sorted({im.size for im in images})}); use frames of one size")
            if len(images) % 2:
                images.append(images[-1])
            clip = torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in images]).transpose(0, 3, 1, 2).copy())
            indices, native_fps, total_pixels = list(range(len(images))), FRAME_LIST_FPS, o.total_pixels
        else:
            vf = read_video(video, fps=fps or o.fps, max_frames=max_frames or o.max_frames, video_start=video_start,
                            video_end=video_end, index=index, item_id=item_id, allow_remote=o.allow_remote)
            clip = torch.from_numpy(vf.frames.transpose(0, 3, 1, 2).copy())
            indices, native_fps, total_pixels = vf.indices, vf.fps, FILE_TOTAL_PIXELS
        n, _, h, w = clip.shape
        min_px, max_px = clip_max_pixels(n, total_pixels=total_pixels, factor=self.factor)
        try:
            rh, rw = smart_resize(h, w, factor=self.factor, min_pixels=min_px, max_pixels=max_px)
        except ValueError as e:
            raise ItemError.for_item(index, item_id, f"video: {e}") from e
        x = normalize(resize_clip(clip, rh, rw), self.image_mean, self.image_std)
        pv, grid = patchify_video(x, patch_size=self.patch_size, merge_size=self.merge_size,
                                  temporal_patch_size=self.temporal_patch_size)
        return VideoPart(pixel_values=pv, grid_thw=grid,
                         timestamps=video_timestamps(indices, native_fps, self.merge_size))

    def parts(self, item: Item, *, index: int | None = None) -> list[Part]:
        """The item's content: videos, then images, then texts; ``[TextPart("NULL")]`` when empty."""
        if item.is_empty:
            return [TextPart("NULL")]
        out: list[Part] = []
        for v in item.videos:
            out.append(self.video_part(v, fps=item.fps, max_frames=item.max_frames, video_start=item.video_start,
                                       video_end=item.video_end, index=index, item_id=item.id))
        for im in item.images:
            out.append(self.image_part(im, index=index, item_id=item.id))
        for t in item.texts:
            if not isinstance(t, str):
                raise ItemError.for_item(index, item.id, f"text must be a string, got {type(t).__name__}")
            out.append(TextPart(t))
        return out

    # -- rendering ----------------------------------------------------------------------------------
    def render_part(self, part: Part) -> str:
        """A part as prompt text: images one vision block, videos one block per temporal group (4.57.3)."""
        if isinstance(part, TextPart):
            return part.text
        merge = self.merge_size ** 2
        if isinstance(part, ImagePart):
            t, h, w = part.grid_thw
            return "<|vision_start|>" + "<|image_pad|>" * (t * h * w // merge) + "<|vision_end|>"
        t, h, w = part.grid_thw
        per_frame = "<|vision_start|>" + "<|video_pad|>" * (h * w // merge) + "<|vision_end|>"
        return "".join(f"<{part.timestamps[g]:.1f} seconds>" + per_frame for g in range(t))

    def render(self, messages: Sequence[tuple[str, str | Sequence[Part]]], *, add_generation_prompt: bool = True) -> str:
        """The chat as the Qwen3-VL template renders it (``<|im_start|>role\\n…<|im_end|>\\n``)."""
        out = []
        for role, content in messages:
            body = content if isinstance(content, str) else "".join(self.render_part(p) for p in content)
            out.append(f"<|im_start|>{role}\n{body}<|im_end|>\n")
        if add_generation_prompt:
            out.append("<|im_start|>assistant\n")
        return "".join(out)

    def encode(self, messages: Sequence[tuple[str, str | Sequence[Part]]], *,
               add_generation_prompt: bool = True) -> Encoded:
        """Render and tokenise a chat; vision parts are collected in the order they appear."""
        text = self.render(messages, add_generation_prompt=add_generation_prompt)
        ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        images = [p for _, c in messages if not isinstance(c, str) for p in c if isinstance(p, ImagePart)]
        videos = [p for _, c in messages if not isinstance(c, str) for p in c if isinstance(p, VideoPart)]
        merge = self.merge_size ** 2
        want_img = sum(int(np.prod(p.grid_thw)) // merge for p in images)
        want_vid = sum(int(np.prod(p.grid_thw)) // merge for p in videos)
        got_img, got_vid = ids.count(self.image_token_id), ids.count(self.video_token_id)
        if (got_img, got_vid) != (want_img, want_vid):
            raise ValueError("the text holds Qwen3-VL vision placeholder tokens (<|image_pad|>/<|video_pad|>); "
                             "remove them from the text")
        return Encoded(input_ids=list(ids), images=images, videos=videos)

    def positions(self, enc: Encoded) -> Any:
        """MRoPE position ids ``(3, L)`` of one sequence (see ``rope_positions``)."""
        return rope_positions(enc.input_ids, [p.grid_thw for p in enc.images], [p.grid_thw for p in enc.videos],
                              image_token_id=self.image_token_id, video_token_id=self.video_token_id,
                              merge_size=self.merge_size)

    def check_truncation(self, enc: Encoded, max_length: int, *, index: int | None = None,
                         item_id: Any = None) -> None:
        """``ItemError`` when cutting to ``max_length`` would drop visual tokens (the reference crashes)."""
        cut = enc.input_ids[max_length:]
        if self.image_token_id in cut or self.video_token_id in cut:
            raise ItemError.for_item(
                index, item_id,
                f"input is {len(enc.input_ids)} tokens and max_length={max_length} would cut its visual tokens; "
                "raise max_length or lower max_pixels/total_pixels/max_frames")

    # -- batching -----------------------------------------------------------------------------------
    def collate(self, encoded: Sequence[Encoded], *, padding_side: str = "right",
                pad_token_id: int | None = None) -> dict[str, Any]:
        """Pad a batch: ``input_ids``, ``attention_mask``, 4.57.3 MRoPE ``position_ids`` (pad positions 1) and the
        concatenated vision tensors, ready for ``Qwen3VLModel(**inputs)``."""
        import torch

        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        pad = self.pad_token_id if pad_token_id is None else pad_token_id
        length = max(e.num_tokens for e in encoded)
        ids = torch.full((len(encoded), length), pad, dtype=torch.long)
        mask = torch.zeros((len(encoded), length), dtype=torch.long)
        for i, e in enumerate(encoded):
            n = e.num_tokens
            sl = slice(0, n) if padding_side == "right" else slice(length - n, length)
            ids[i, sl] = torch.tensor(e.input_ids, dtype=torch.long)
            mask[i, sl] = 1
        positions = torch.ones((3, len(encoded), length), dtype=torch.long)
        for i, e in enumerate(encoded):
            n = e.num_tokens
            sl = slice(0, n) if padding_side == "right" else slice(length - n, length)
            positions[:, i, sl] = self.positions(e)
        out: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
        images = [p for e in encoded for p in e.images]
        videos = [p for e in encoded for p in e.videos]
        if images:
            out["pixel_values"] = _cat([p.pixel_values for p in images])
            out["image_grid_thw"] = _grid([p.grid_thw for p in images])
        if videos:
            out["pixel_values_videos"] = _cat([p.pixel_values for p in videos])
            out["video_grid_thw"] = _grid([p.grid_thw for p in videos])
        return out
