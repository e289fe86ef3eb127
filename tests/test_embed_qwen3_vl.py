"""Qwen3-VL embedder fidelity: prompts, token ids, pixels and vectors against an independent computation.

The reference here is written in the test, straight from the fidelity rules of ARCHITECTURE.md: the prompt
string by hand, pixels by transformers' own image processor (images) or a numpy patchify (video), and
the checkpoint's own ``Qwen3VLForConditionalGeneration`` run one item at a time, unpadded, with
transformers computing the MRoPE positions, last token pooled.
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from media_files import write_video
from PIL import Image
from video_reference import clip_resize, decord_frames, video_block, video_pixels

from omniret import Item, ItemError
from omniret.base.media import smart_resize
from omniret.base.vl_inputs import TextPart
from omniret.embed import load_embedder
from omniret.embed.qwen3_vl import format_instruction

TOL = 1e-5
DEFAULT = "Represent the user's input."


# -- fixtures -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def emb(tiny_vl_embedding: Path):
    return load_embedder(str(tiny_vl_embedding), device="cpu", prepare_workers=2)


@pytest.fixture(scope="module")
def ref_model(tiny_vl_embedding: Path):
    from transformers import Qwen3VLForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    return Qwen3VLForConditionalGeneration.from_pretrained(str(tiny_vl_embedding), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tok(tiny_vl_embedding: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_vl_embedding))


def _rand_image(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "L":
        return Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
    arr = rng.integers(0, 256, (h, w, 4 if mode == "RGBA" else 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGBA" if mode == "RGBA" else "RGB")
    if mode == "P":
        img = img.quantize(16)
    return img


# -- the independent reference ----------------------------------------------------------------------------
def chat(instruction: str, user: str) -> str:
    return (f"<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n")


def image_block(h: int, w: int) -> str:
    return "<|vision_start|>" + "<|image_pad|>" * (h * w // 1024) + "<|vision_end|>"


def resized_rgb(img: Image.Image, h: int, w: int) -> Image.Image:
    if img.mode == "RGBA":
        bg = Image.new("RGB", img.size, (255, 255, 255))
        bg.paste(img, mask=img.split()[3])
        img = bg
    return img.convert("RGB").resize((w, h), Image.Resampling.BICUBIC)


def image_pixels(images: list[Image.Image]) -> dict:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    proc = Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3,
                                    image_std=[0.5] * 3)
    out = proc(images=images, do_resize=False, return_tensors="pt")
    return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}


def reference_vector(model, tok, prompt: str, images: list[Image.Image] | None = None,
                     videos: list[np.ndarray] | None = None) -> np.ndarray:
    ids = torch.tensor([tok(prompt)["input_ids"]])
    kwargs: dict = {}
    if images:
        kwargs.update(image_pixels(images))
    if videos:
        pv = [video_pixels(v) for v in videos]
        kwargs["pixel_values_videos"] = torch.cat([p for p, _ in pv])
        kwargs["video_grid_thw"] = torch.tensor([g for _, g in pv])
    if images or videos:
        kwargs["mm_token_type_ids"] = ((ids == 151655).long() + 2 * (ids == 151656).long())
    with torch.no_grad():
        h = model.model(input_ids=ids, **kwargs).last_hidden_state[0, -1]
    return torch.nn.functional.normalize(h.float(), dim=-1).numpy()


def close(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, atol=TOL, rtol=0)


# -- prompts and token ids --------------------------------------------------------------------------------
@pytest.mark.parametrize(("given", "expected"), [
    (None, DEFAULT), ("", DEFAULT), ("   ", DEFAULT), ("Find cats", "Find cats."), ("  Find cats  ", "Find cats."),
    ("Find cats?", "Find cats?"), ("找猫。", "找猫。"), ("找猫", "找猫."), ("list: «x»", "list: «x»"),
    ("ends with digit 3", "ends with digit 3."),
])
def test_instruction_rule(given, expected):
    assert format_instruction(given, DEFAULT) == expected


def _ids(emb, item, instruction=None):
    return emb.prepare_all([item], instruction)[0]


def test_prompt_text_null_and_order(emb, tok, tmp_path):
    b = emb.inputs
    cases = [
        (Item(text="hello"), None, chat(DEFAULT, "hello")),
        (Item(), None, chat(DEFAULT, "NULL")),
        (Item(text=["a", "b", " c"]), "Find", chat("Find.", "ab c")),
        (Item(text="x", instruction="Own。"), "ignored", chat("Own。", "x")),
    ]
    for item, instr, want in cases:
        parts = b.parts(item)
        instruction = format_instruction(item.instruction if item.instruction is not None else instr, DEFAULT)
        got = b.render([("system", [TextPart(instruction)]), ("user", parts)])
        assert got == want
        assert _ids(emb, item, instr).input_ids == tok(want)["input_ids"]
    # content order: videos, then images, then texts, whatever order the keys were given in
    img = _rand_image(40, 40)
    vid = [_rand_image(64, 64, seed=s) for s in range(2)]
    enc = _ids(emb, Item(text="T", image=img, video=vid))
    text = tok.decode(enc.input_ids)
    assert text.index("seconds>") < text.index("<|image_pad|>") < text.index("T<|im_end|>")


def test_image_prompt_and_token_count(emb, tok):
    img = _rand_image(100, 60)
    h, w = smart_resize(60, 100, 32, 4 * 32 * 32, 1800 * 32 * 32)
    assert (h, w) == (64, 96)
    enc = _ids(emb, Item(text="cap", image=img))
    want = chat(DEFAULT, image_block(h, w) + "cap")
    assert enc.input_ids == tok(want)["input_ids"]
    assert enc.input_ids.count(151655) == h * w // 1024 == 6


def test_video_prompt_layout(emb, tok, tmp_path):
    path = write_video(tmp_path / "v.mp4", n=12, fps=6)
    enc = _ids(emb, Item(video=str(path), fps=2))
    # 12 frames at 6 fps, fps=2 -> 4 frames, linspace(0, 11, 4).round() = [0, 4, 7, 11] (half to even)
    times = [(0 / 6 + 4 / 6) / 2, (7 / 6 + 11 / 6) / 2]
    text = tok.decode(enc.input_ids)
    assert f"<{times[0]:.1f} seconds><|vision_start|><|video_pad|>" in text
    assert "<0.3 seconds>" in text and "<1.5 seconds>" in text
    # no outer vision_start/end around the whole video (4.57.3 layout)
    assert "user\n<0.3 seconds><|vision_start|>" in text
    assert "<|vision_end|><|im_end|>" in text
    assert text.count("<|vision_start|>") == 2
    assert "<|vision_start|><|vision_start|>" not in text and "<|vision_end|><|vision_end|>" not in text


@pytest.mark.parametrize(("hw", "want"), [
    ((10, 10), (64, 64)), ((3000, 4000), (1152, 1536)), ((60, 100), (64, 96)),
    ((48, 80), (64, 64)),  # 1.5 -> 2 and 2.5 -> 2: round half to even
    ((16, 48), (64, 128)),  # 32x64 is under min_pixels: scaled up by beta, ceil
])
def test_smart_resize_hand_checked(hw, want):
    assert smart_resize(*hw, factor=32, min_pixels=4 * 32 * 32, max_pixels=1800 * 32 * 32) == want


def test_smart_resize_rejects_extreme_aspect():
    with pytest.raises(ValueError, match="aspect ratio must be smaller than 200"):
        smart_resize(10, 2500, 32, 4096, 1800 * 1024)


def test_image_pixels_equal_transformers_processor(emb):
    for mode, size in (("RGB", (70, 130)), ("RGBA", (50, 40)), ("L", (33, 77)), ("P", (64, 64))):
        img = _rand_image(*size, mode=mode)
        part = emb.inputs.image_part(img)
        h, w = smart_resize(img.height, img.width, 32, 4 * 32 * 32, 1800 * 32 * 32)
        ref = image_pixels([resized_rgb(img, h, w)])
        assert list(ref["image_grid_thw"][0]) == list(part.grid_thw)
        torch.testing.assert_close(part.pixel_values, ref["pixel_values"], atol=1e-6, rtol=0)


# -- vectors ----------------------------------------------------------------------------------------------
def test_text_vectors_match_reference(emb, ref_model, tok):
    cases = [("hello", None), ("a long text about retrieval and vectors. " * 40, None),
             ("Ein Hund läuft über die Wiese. 猫が好きです。", None), ("cats", "Find images of cats")]
    got = emb.embed([Item(text=t) for t, _ in cases[:3]])
    for (t, _), g in zip(cases[:3], got, strict=True):
        close(g, reference_vector(ref_model, tok, chat(DEFAULT, t)))
    close(emb.embed([Item(text="cats")], instruction="Find images of cats")[0],
          reference_vector(ref_model, tok, chat("Find images of cats.", "cats")))
    close(emb.embed([Item()])[0], reference_vector(ref_model, tok, chat(DEFAULT, "NULL")))


def test_truncation_at_small_max_length(tiny_vl_embedding, ref_model, tok):
    small = load_embedder(str(tiny_vl_embedding), device="cpu", max_length=20)
    text = "one two three four five six seven eight nine ten eleven twelve"
    ids = tok(chat(DEFAULT, text))["input_ids"][:20]
    enc = small.prepare_all([Item(text=text)], None)[0]
    assert enc.input_ids == ids
    with torch.no_grad():
        h = ref_model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
    close(small.embed([Item(text=text)])[0], torch.nn.functional.normalize(h, dim=-1).numpy())
    # cutting visual tokens would crash the reference: a clear error instead, before model work
    with pytest.raises(ItemError, match=r"item 0: .*max_length=20 would cut its visual tokens"):
        small.embed([Item(image=_rand_image(128, 128))])


def test_image_vectors_match_reference(emb, ref_model, tok, tmp_path):
    tiny = _rand_image(10, 10, seed=1)
    huge = _rand_image(4000, 3000, seed=2)
    rgba, gray, pal = _rand_image(50, 40, "RGBA", 3), _rand_image(33, 77, "L", 4), _rand_image(64, 64, "P", 5)
    png = tmp_path / "gray.png"
    gray.save(png)
    jpg_bytes = io.BytesIO()
    _rand_image(48, 80, seed=6).save(jpg_bytes, format="JPEG")
    data_uri = "data:image/jpeg;base64," + base64.b64encode(jpg_bytes.getvalue()).decode()
    items = [Item(image=tiny), Item(image=huge), Item(image=rgba), Item(image=str(png)), Item(image=pal),
             Item(image=data_uri), Item(text="a caption", image=[tiny, rgba])]
    got = emb.embed(items)
    sources = [[tiny], [huge], [rgba], [Image.open(png)], [pal], [Image.open(io.BytesIO(jpg_bytes.getvalue()))],
               [tiny, rgba]]
    for i, (item, srcs) in enumerate(zip(items, sources, strict=True)):
        sizes = [smart_resize(s.height, s.width, 32, 4 * 32 * 32, 1800 * 32 * 32) for s in srcs]
        resized = [resized_rgb(s, h, w) for s, (h, w) in zip(srcs, sizes, strict=True)]
        prompt = chat(DEFAULT, "".join(image_block(h, w) for h, w in sizes) + "".join(item.texts))
        close(got[i], reference_vector(ref_model, tok, prompt, images=resized))
    assert smart_resize(3000, 4000, 32, 4 * 32 * 32, 1800 * 32 * 32) == (1152, 1536)  # the huge one is capped


@pytest.mark.parametrize(("fps", "idx"), [(1.0, [0, 11]), (3.0, [0, 2, 4, 7, 9, 11])])
def test_video_file_vectors_match_reference(emb, ref_model, tok, tmp_path, fps, idx):
    # 12 frames at 6 fps = 2 s. fps=1 -> 2 frames, clamped up to min 4 -> but <= total; fps=3 -> 6 frames.
    path = write_video(tmp_path / "v.mp4", n=12, fps=6)
    n = max(4, min(12, math.floor(12 / 6 * fps / 2) * 2))
    n = math.floor(min(n, 12) / 2) * 2
    want_idx = torch.linspace(0, 11, n).round().long().tolist()
    if fps == 3.0:
        assert want_idx == idx
    frames = clip_resize(decord_frames(path, want_idx), 128000 * 32 * 32 * 0.9)
    pv, grid = video_pixels(frames)
    ts = [i / 6 for i in want_idx]
    times = [(ts[i] + ts[i + 1]) / 2 for i in range(0, len(ts), 2)]
    got = emb.embed([Item(video=str(path), fps=fps, text="clip")])[0]
    close(got, reference_vector(ref_model, tok, chat(DEFAULT, video_block(grid, times) + "clip"), videos=[frames]))


def test_frame_list_vectors_match_reference(emb, ref_model, tok, tmp_path):
    frames = [_rand_image(100, 70, seed=s) for s in range(3)]
    paths = []
    for i, f in enumerate(frames):
        p = tmp_path / f"f{i}.png"
        f.save(p)
        paths.append(str(p))
    got = emb.embed([Item(video=paths)])[0]
    # each frame snapped to multiples of 64 first (factor 64), padded to an even count, then the clip resize
    h, w = smart_resize(70, 100, 64, 4 * 64 * 64, 16384 * 64 * 64)
    first = np.stack([np.asarray(f.resize((w, h), Image.Resampling.BICUBIC)) for f in frames + frames[-1:]])
    clip = clip_resize(first, 10 * 768 * 32 * 32)
    _, grid = video_pixels(clip)
    prompt = chat(DEFAULT, video_block(grid, [0.25, 1.25]))
    close(got, reference_vector(ref_model, tok, prompt, videos=[clip]))


def test_frame_list_thinned_to_max_frames(tiny_vl_embedding):
    e = load_embedder(str(tiny_vl_embedding), device="cpu", max_frames=4)
    frames = [_rand_image(32, 32, seed=s) for s in range(10)]
    enc = e.prepare_all([Item(video=frames)], None)[0]
    # np.linspace(0, 9, 4, dtype=int) = [0, 3, 6, 9] -> 4 frames, 2 groups at 2 fps
    assert enc.videos[0].grid_thw[0] == 2 and enc.videos[0].timestamps == [0.25, 1.25]


def test_pdf_page_vector_matches_reference(emb, ref_model, tok, tmp_path):
    from omniret.base.media import pdf_page_items

    pdf = tmp_path / "doc.pdf"
    pages = [_rand_image(60, 80, seed=7), _rand_image(50, 50, seed=8)]
    pages[0].save(pdf, save_all=True, append_images=pages[1:])
    items = pdf_page_items(pdf, scale=1.0)
    assert [it.id for it in items] == [f"{pdf}#page=1", f"{pdf}#page=2"]
    assert items[1].metadata == {"source": str(pdf), "page": 2, "text": "", "num_pages": 2}
    page = items[0].image
    got = emb.embed(items[:1])[0]
    h, w = smart_resize(page.height, page.width, 32, 4 * 32 * 32, 1800 * 32 * 32)
    close(got, reference_vector(ref_model, tok, chat(DEFAULT, image_block(h, w)), images=[resized_rgb(page, h, w)]))


def test_batched_sorted_equals_one_at_a_time(tiny_vl_embedding, tmp_path):
    e = load_embedder(str(tiny_vl_embedding), device="cpu", max_batch_tokens=600, max_batch_items=3)
    path = write_video(tmp_path / "v.mp4", n=8, fps=4)
    items = [Item(text="short"), Item(text="a much longer text " * 20), Item(image=_rand_image(40, 90)),
             Item(text="mixed", image=_rand_image(30, 30, seed=2)), Item(), Item(video=str(path)),
             Item(text="über ünïcödé 文字"), Item(image=_rand_image(64, 64, seed=3), text=["x", "y"])]
    batched = e.embed(items)
    single = np.stack([e.embed([it])[0] for it in items])
    np.testing.assert_allclose(batched, single, atol=TOL, rtol=0)
    norms = np.linalg.norm(batched, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_right_padding_gives_unpadded_vectors(emb):
    import torch

    encs = emb.prepare_all([Item(text="x"), Item(text="much longer " * 10, image=_rand_image(40, 40))], None)
    padded = emb._forward_batch(encs)
    alone = np.concatenate([emb._forward_batch([e]) for e in encs])
    np.testing.assert_allclose(padded, alone, atol=TOL, rtol=0)
    inputs = emb.inputs.collate(encs, padding_side="right")
    assert inputs["attention_mask"][0].sum() == encs[0].num_tokens
    assert torch.equal(inputs["position_ids"][:, 0, : encs[0].num_tokens],
                       torch.arange(encs[0].num_tokens).expand(3, -1))


# -- bad inputs -------------------------------------------------------------------------------------------
def test_bad_inputs_fail_alone_and_before_model_work(emb, tmp_path):
    truncated_png = tmp_path / "t.png"
    buf = io.BytesIO()
    _rand_image(64, 64).save(buf, format="PNG")
    truncated_png.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    garbage = tmp_path / "g.jpg"
    garbage.write_bytes(b"not an image at all")
    video = write_video(tmp_path / "ok.mp4", n=8, fps=4)
    broken_video = tmp_path / "broken.mp4"
    broken_video.write_bytes(video.read_bytes()[:300])
    big = tmp_path / "big.png"
    Image.new("RGB", (600, 600)).save(big)
    items = [Item(text="good one", id="g1"), Item(image=str(truncated_png), id="trunc"), Item(text="", id="empty"),
             Item(image=str(tmp_path / "missing.png"), id="missing"), Item(image="https://example.com/x.png", id="url"),
             Item(video=str(broken_video), id="badvid"), Item(image=str(garbage), id="garbage"),
             Item(text="good two", id="g2")]
    calls = []
    original = emb._forward

    def spy(prepared):
        calls.append(len(prepared))
        return original(prepared)

    emb._forward = spy
    try:
        with pytest.raises(ItemError, match=r"6 items failed: item 1 id='trunc': image .*t\.png: cannot decode"):
            emb.embed(items)
        assert calls == []  # nothing reached the model
        res = emb.embed_partial(items)
    finally:
        del emb._forward
    assert res.indices == [0, 7]
    close(res.vectors, emb.embed([items[0], items[7]]))
    reasons = {f.id: f.reason for f in res.failures}
    assert set(reasons) == {"trunc", "empty", "missing", "url", "badvid", "garbage"}
    assert reasons["empty"] == "empty text"
    assert "no such file" in reasons["missing"] and "missing.png" in reasons["missing"]
    assert reasons["url"].startswith("remote URLs are disabled")
    assert "broken.mp4" in reasons["badvid"]
    # oversized: a decompression bomb by Pillow's limit
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 100_000
    try:
        with pytest.raises(ItemError, match=r"item 0 id='big': image .*big\.png: too large to decode safely"):
            emb.embed([Item(image=str(big), id="big")])
    finally:
        Image.MAX_IMAGE_PIXELS = old


def test_missing_video_file_and_placeholder_text(emb, tmp_path):
    with pytest.raises(ItemError, match=r"item 0: video .*nope\.mp4: no such file"):
        emb.embed([Item(video=str(tmp_path / "nope.mp4"))])
    with pytest.raises(ItemError, match="vision placeholder tokens"):
        emb.embed([Item(text="sneaky <|image_pad|> token")])


def test_image_for_text_model_is_item_error(minilm_path):
    m = load_embedder(str(minilm_path), device="cpu")
    res = m.embed_partial([Item(text="fine"), Item(image="x.png", id="img")])
    assert res.indices == [0]
    assert res.failures[0].id == "img" and "cannot embed image" in res.failures[0].reason


# -- Matryoshka -------------------------------------------------------------------------------------------
def test_matryoshka_prefix_renormalised(tiny_vl_embedding, copy_checkpoint):
    from omniret.errors import DimensionError

    ckpt = copy_checkpoint(tiny_vl_embedding)
    (ckpt / "omniret.json").write_text(json.dumps({"base_model": "Qwen/Qwen3-VL-Embedding-2B", "dims": [16, 32]}))
    e = load_embedder(str(ckpt), device="cpu")
    assert e.dims == (16, 32, 64)
    items = [Item(text="a"), Item(text="b c d")]
    full = e.embed(items)
    for d in (16, 32):
        sub = e.embed(items, dim=d)
        want = full[:, :d] / np.linalg.norm(full[:, :d], axis=1, keepdims=True)
        np.testing.assert_allclose(sub, want, atol=1e-6)
    with pytest.raises(DimensionError, match=r"does not support dim=24; supported Matryoshka dims: \[16, 32, 64\]"):
        e.embed(items, dim=24)


def test_all_weights_loaded(emb, ref_model):
    ours = emb.model.state_dict()
    theirs = ref_model.model.state_dict()
    assert set(ours) == set(theirs)
    for k, v in ours.items():
        assert torch.equal(v, theirs[k]), k
