"""The Qwen3-VL reranker against an independent computation on the tiny random checkpoint.

The independent side is written here from the reference's facts: the prompt as a literal string,
``Qwen3VLForConditionalGeneration`` with its full LM head, one pair per forward, and
sigmoid(logit_yes − logit_no) at the last position. Images (and PDF pages) of sizes that are already
multiples of 32 go through transformers' own PIL image processor, and a video's frames, sizes and pixels
come from ``video_reference`` (decord, torch resizing, a numpy patchify), so no omniret input code
touches that side.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from video_reference import clip_resize, decord_frames, video_block, video_pixels

from omniret import Item
from omniret.errors import ConfigError, ItemError, ModelLoadError
from omniret.rerank import Reranker, load_reranker

SYSTEM = ('Judge whether the Document meets the requirements based on the Query and the Instruct provided. '
          'Note that the answer can only be "yes" or "no".')
DEFAULT_INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."
CLOSING = [151645, 198, 151644, 77091, 198]  # <|im_end|> \n <|im_start|> assistant \n
TOL = 1e-5


# -- fixtures -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rr(tiny_vl_reranker):
    return load_reranker(tiny_vl_reranker, max_batch_items=3)


@pytest.fixture(scope="module")
def full(tiny_vl_reranker):
    from transformers import Qwen3VLForConditionalGeneration

    return Qwen3VLForConditionalGeneration.from_pretrained(str(tiny_vl_reranker), dtype="float32").eval()


@pytest.fixture(scope="module")
def tok(tiny_vl_reranker):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_vl_reranker))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """An image (96×64), a PDF page holding an image (rendered 64×96), a 12-frame video."""
    import av
    from PIL import Image

    root = tmp_path_factory.mktemp("rerank-media")
    rng = np.random.default_rng(7)
    image = root / "cat.png"
    Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(image)
    pdf = root / "page.pdf"
    Image.fromarray(rng.integers(0, 256, (96, 64, 3), dtype=np.uint8)).save(pdf, resolution=72.0)
    video = root / "clip.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("mpeg4", rate=6)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for _ in range(12):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return {"image": image, "pdf": pdf, "video": video}


# -- the independent side -------------------------------------------------------------------------------
def prompt(instruction: str, query: str, document: str) -> str:
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n<Instruct>: {instruction}<Query>:{query}"
            f"\n<Document>:{document}<|im_end|>\n<|im_start|>assistant\n")


def image_block(h: int, w: int) -> str:
    return "<|vision_start|>" + "<|image_pad|>" * (h * w // 1024) + "<|vision_end|>"


def pixels(path: Path, image=None):
    """transformers' PIL image processor on an image whose sides are multiples of 32 (no resize needed)."""
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    img = image if image is not None else Image.open(path).convert("RGB")
    assert img.size[0] % 32 == 0 and img.size[1] % 32 == 0
    proc = Qwen2VLImageProcessorPil(patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3,
                                    image_std=[0.5] * 3)
    out = proc(images=[img], do_resize=False, return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def reference_score(full, tok, ids: list[int], **vision) -> float:
    """One pair, full LM head, last position: sigmoid(logit_yes - logit_no)."""
    import torch

    vocab = tok.get_vocab()
    t = torch.tensor([ids])
    if vision:  # transformers 5 finds the vision blocks (for MRoPE) from the token types
        vision["mm_token_type_ids"] = (t == 151655).long() + 2 * (t == 151656).long()
    with torch.no_grad():
        logits = full(input_ids=t, attention_mask=torch.ones_like(t), **vision).logits[0, -1]
    return float(torch.sigmoid(logits[vocab["yes"]] - logits[vocab["no"]]))


def reference_text(full, tok, instruction: str, query: str, document: str) -> float:
    return reference_score(full, tok, tok(prompt(instruction, query, document))["input_ids"])


# -- prompt and token ids -------------------------------------------------------------------------------
def test_is_a_reranker_reading_the_untied_lm_head(rr, tiny_vl_reranker):
    from safetensors import safe_open

    assert isinstance(rr, Reranker)
    assert rr.head_source == "lm_head.weight"
    with safe_open(str(tiny_vl_reranker / "model.safetensors"), framework="pt") as f:
        head = f.get_tensor("lm_head.weight")
        emb = f.get_tensor("model.language_model.embed_tokens.weight")
    # reading the input embeddings instead would give another direction (the fixture is untied)
    wrong = emb[rr.yes_id] - emb[rr.no_id]
    right = head[rr.yes_id] - head[rr.no_id]
    assert np.allclose(rr.direction.numpy(), right.numpy())
    assert not np.allclose(wrong.numpy(), right.numpy(), atol=1e-2)


def test_text_pair_token_ids_exact(rr, tok):
    ids = rr.encode_pair("a cat", "a dog", instruction="Find pictures of cats").input_ids
    assert ids == tok(prompt("Find pictures of cats", "a cat", "a dog"))["input_ids"]
    assert ids[:3] == [151644, tok.convert_tokens_to_ids("system"), 198]
    assert ids[-5:] == CLOSING
    # default instruction; an instruction is used as given: not stripped, no '.' added
    assert rr.encode_pair("q", "d").input_ids == tok(prompt(DEFAULT_INSTRUCTION, "q", "d"))["input_ids"]
    assert rr.encode_pair("q", "d", instruction="").input_ids == rr.encode_pair("q", "d").input_ids
    assert rr.encode_pair("q", "d", instruction=" odd ").input_ids == tok(prompt(" odd ", "q", "d"))["input_ids"]
    # empty items are NULL; several texts are joined with nothing between them
    assert rr.encode_pair(Item(), Item(text=["x", "y"])).input_ids == \
        tok(prompt(DEFAULT_INSTRUCTION, "NULL", "xy"))["input_ids"]
    # the query's own instruction overrides the call's
    assert rr.encode_pair(Item(text="q", instruction="mine"), "d", instruction="call").input_ids == \
        tok(prompt("mine", "q", "d"))["input_ids"]


def test_image_and_video_layout(rr, tok, media):
    enc = rr.encode_pair("a cat", Item(text="caption", image=str(media["image"])))
    assert tok.decode(enc.input_ids) == prompt(DEFAULT_INSTRUCTION, "a cat", image_block(64, 96) + "caption")
    assert [tuple(p.grid_thw) for p in enc.images] == [(1, 4, 6)]
    text = tok.decode(rr.encode_pair("a cat", Item(video=str(media["video"]))).input_ids)
    # the pinned 4.57.3 layout: timestamped frame groups, no outer vision_start/vision_end around the video
    assert "\n<Document>:<0." in text and "<|vision_end|><|im_end|>\n<|im_start|>assistant\n" in text
    assert text.count("<|vision_start|>") == text.count("seconds>")


def test_truncation_keeps_special_and_closing_tokens(rr, tok, media, monkeypatch):
    doc = Item(text="one two three four five six seven eight nine ten " * 4, image=str(media["image"]))
    full_ids = rr.encode_pair("a cat", doc).input_ids
    monkeypatch.setattr(rr, "max_length", 60)
    cut = rr.encode_pair("a cat", doc).input_ids
    special = set(tok.all_special_ids)
    # the reference: truncate(ids[:-5], max_length) + ids[-5:], so a cut pair is max_length + 5 long
    assert len(cut) == 65 and cut[-5:] == CLOSING
    assert [t for t in cut if t in special] == [t for t in full_ids if t in special]
    # what went: the last non-special tokens before the closing five, nothing else
    drop = len(full_ids) - len(cut)
    plain_pos = [i for i, t in enumerate(full_ids[:-5]) if t not in special]
    gone = set(plain_pos[-drop:])
    assert cut == [t for i, t in enumerate(full_ids) if i not in gone]
    assert tok.decode(cut).count("<|image_pad|>") == 6
    # a pair within max_length + 5 is not cut at all
    monkeypatch.setattr(rr, "max_length", len(full_ids) - 5)
    assert rr.encode_pair("a cat", doc).input_ids == full_ids


# -- scores against the independent computation --------------------------------------------------------
def test_text_text_scores_match_full_lm_head(rr, full, tok):
    docs = ["a dog on the grass", "a small cat sleeping", "quarterly revenue report", "NULL-ish"]
    got = rr.score("a cat", docs, instruction="Find cats")
    want = [reference_text(full, tok, "Find cats", "a cat", d) for d in docs]
    assert got.dtype == np.float32 and got.shape == (4,)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    assert ((got > 0) & (got < 1)).all()


def test_text_image_and_image_text_scores(rr, full, tok, media):
    pv, grid = pixels(media["image"])
    got = rr.score("a cat", [Item(image=str(media["image"])), Item(text="caption", image=str(media["image"]))])
    want = [
        reference_score(full, tok, tok(prompt(DEFAULT_INSTRUCTION, "a cat", image_block(64, 96)))["input_ids"],
                        pixel_values=pv, image_grid_thw=grid),
        reference_score(full, tok, tok(prompt(DEFAULT_INSTRUCTION, "a cat", image_block(64, 96) + "caption"))[
            "input_ids"], pixel_values=pv, image_grid_thw=grid),
    ]
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    got = rr.score(Item(image=str(media["image"])), ["a cat", "a dog"])
    want = [reference_score(full, tok, tok(prompt(DEFAULT_INSTRUCTION, image_block(64, 96), d))["input_ids"],
                            pixel_values=pv, image_grid_thw=grid) for d in ("a cat", "a dog")]
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_text_pdf_page_score(rr, full, tok, media):
    from omniret.base.media import pdf_page_items

    (page,) = pdf_page_items(media["pdf"], scale=1.0)
    assert page.image.size == (64, 96)
    pv, grid = pixels(media["pdf"], image=page.image)
    got = rr.score("a scanned page", [page])
    want = reference_score(full, tok, tok(prompt(DEFAULT_INSTRUCTION, "a scanned page", image_block(96, 64)))[
        "input_ids"], pixel_values=pv, image_grid_thw=grid)
    assert abs(float(got[0]) - want) < TOL


def test_text_video_score(rr, full, tok, media):
    """The reference's input is built without omniret: decord's frames at fps 2 (4 of 12 frames at 6 fps,
    ``linspace(0, 11, 4).round()``), qwen-vl-utils' sizing, a numpy patchify and the prompt as a string."""
    import torch

    idx = torch.linspace(0, 11, 4).round().long().tolist()
    frames = clip_resize(decord_frames(media["video"], idx), 128000 * 32 * 32 * 0.9)
    pv, grid = video_pixels(frames)
    ts = [i / 6 for i in idx]
    times = [(ts[i] + ts[i + 1]) / 2 for i in range(0, len(ts), 2)]
    ids = tok(prompt(DEFAULT_INSTRUCTION, "a clip", video_block(grid, times)))["input_ids"]
    want = reference_score(full, tok, ids, pixel_values_videos=pv, video_grid_thw=torch.tensor([grid]))
    doc = Item(video=str(media["video"]), fps=2)
    assert list(rr.encode_pair("a clip", doc).input_ids) == ids
    got = rr.score("a clip", [doc, "some text"])
    assert abs(float(got[0]) - want) < TOL
    assert abs(float(got[1]) - reference_text(full, tok, DEFAULT_INSTRUCTION, "a clip", "some text")) < TOL


def test_batched_equals_one_at_a_time_in_any_order(rr, media):
    docs = [Item(text="a dog", id="t1"), Item(image=str(media["image"]), id="i1"),
            Item(text="a long document " * 20, id="t2"), Item(video=str(media["video"]), id="v1"),
            Item(text="caption", image=str(media["image"]), id="m1"), Item(id="empty"), Item(text="x", id="t3")]
    batched = rr.score("a cat", docs)
    single = np.array([rr.score("a cat", [d])[0] for d in docs])
    np.testing.assert_allclose(batched, single, atol=TOL, rtol=0)
    order = list(range(len(docs)))
    random.Random(3).shuffle(order)
    shuffled = rr.score("a cat", [docs[i] for i in order])
    np.testing.assert_allclose(shuffled, batched[order], atol=TOL, rtol=0)


# -- rerank, errors, empties ------------------------------------------------------------------------------
def test_rerank_orders_and_cuts(rr):
    docs = ["a dog", "a cat", "revenue", "kittens", "NULL"]
    scores = rr.score("a cat", docs)
    res = rr.rerank("a cat", docs, top_n=3)
    assert res.indices == list(np.argsort(-scores, kind="stable")[:3])
    np.testing.assert_allclose(res.scores, scores[res.indices])
    assert list(res.scores) == sorted(res.scores, reverse=True)
    assert res.to_list()[0] == {"index": res.indices[0], "score": float(res.scores[0])}
    assert len(rr.rerank("a cat", docs)) == 5
    with pytest.raises(ConfigError, match="top_n=-1"):
        rr.rerank("a cat", docs, top_n=-1)


def test_empty_documents_give_empty_results(rr):
    out = rr.score("a cat", [])
    assert out.shape == (0,) and out.dtype == np.float32
    assert rr.rerank("a cat", []).indices == []
    assert rr.score_partial("a cat", []).ok


def test_bad_document_raises_before_model_work_and_partial_keeps_the_rest(rr, media, tmp_path):
    calls = []
    handle = rr.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        docs = ["a dog", Item(image=str(tmp_path / "missing.png"), id="gone"), Item(image=str(media["image"]))]
        with pytest.raises(ItemError, match=r"item 1 id='gone': image .*missing\.png: no such file"):
            rr.score("a cat", docs)
        assert calls == []
        part = rr.score_partial("a cat", docs)
    finally:
        handle.remove()
    assert part.indices == [0, 2] and [f.index for f in part.failures] == [1] and part.failures[0].id == "gone"
    np.testing.assert_allclose(part.scores, rr.score("a cat", [docs[0], docs[2]]), atol=TOL, rtol=0)
    res = rr.rerank("a cat", docs, skip_errors=True)
    assert sorted(res.indices) == [0, 2] and res.failures == part.failures
    with pytest.raises(ItemError, match=r"query id='q': image .*missing\.png: no such file"):
        rr.score(Item(image=str(tmp_path / "missing.png"), id="q"), ["a dog"])
    with pytest.raises(TypeError, match="takes a list of documents"):
        rr.score("a cat", "a dog")


# -- loading ----------------------------------------------------------------------------------------------
def test_tied_checkpoint_reads_the_input_embeddings(tiny_vl_reranker, copy_checkpoint, tok):
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import Qwen3VLForConditionalGeneration

    path = copy_checkpoint(tiny_vl_reranker)
    weights = load_file(str(path / "model.safetensors"))
    del weights["lm_head.weight"]
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((path / "config.json").read_text())
    cfg["tie_word_embeddings"] = cfg["text_config"]["tie_word_embeddings"] = True
    (path / "config.json").write_text(json.dumps(cfg))

    rr = load_reranker(path)
    assert rr.head_source == "model.language_model.embed_tokens.weight"
    tied = Qwen3VLForConditionalGeneration.from_pretrained(str(path), dtype=torch.float32).eval()
    assert torch.equal(tied.lm_head.weight, tied.model.language_model.embed_tokens.weight)
    got = rr.score("a cat", ["a dog"], instruction="Find cats")
    assert abs(float(got[0]) - reference_text(tied, tok, "Find cats", "a cat", "a dog")) < TOL


def test_untied_checkpoint_without_lm_head_is_refused(tiny_vl_reranker, copy_checkpoint):
    from safetensors.torch import load_file, save_file

    path = copy_checkpoint(tiny_vl_reranker)
    weights = load_file(str(path / "model.safetensors"))
    del weights["lm_head.weight"]
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="no lm_head.weight and the config does not tie it"):
        load_reranker(path)


def test_load_reranker_refuses_wrong_kinds_and_options(tiny_vl_reranker, tmp_path):
    with pytest.raises(ModelLoadError, match="qwen3-vl-embedding-2b: Qwen/Qwen3-VL-Embedding-2B is an embedding model, not a reranker"):
        load_reranker("qwen3-vl-embedding-2b")
    with pytest.raises(ConfigError, match=r"unknown reranker option\(s\) \['max_pixel'\]"):
        load_reranker(tiny_vl_reranker, max_pixel=100)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json or modules.json"):
        load_reranker(tmp_path / "empty")
    shutil.rmtree(tmp_path / "empty")


def test_prepare_then_score_prepared_is_score(rr, tmp_path):
    docs = ["a dog", Item(image=str(tmp_path / "missing.png"), id="gone"), "a cat"]
    prepared = rr.prepare_pairs("a cat", docs)
    assert isinstance(prepared[1], ItemError)
    with pytest.raises(TypeError, match="drop the ItemError entries"):
        rr.score_prepared(prepared)
    good = [prepared[0], prepared[2]]
    np.testing.assert_allclose(rr.score_prepared(good), rr.score("a cat", ["a dog", "a cat"]), atol=TOL, rtol=0)
    assert rr.score_prepared([]).shape == (0,)
