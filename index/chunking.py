"""Text extraction (HTML tags stripped) and token-window chunking with overlap.

Chunks are counted in the embedder's own tokens when it exposes a fast tokenizer (so a chunk fits the
model), else in whitespace-separated words (the documented fallback). Chunk text is always a slice of
the original text, never a detokenisation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from html.parser import HTMLParser
from typing import Protocol

from omniret.errors import ConfigError


class _TextOfHtml(HTMLParser):
    _SKIP = {"script", "style", "head", "noscript", "template"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif tag in {"p", "br", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "title"}:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML document (stdlib ``html.parser``; scripts and styles dropped)."""
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    return re.sub(r"[ \t]*\n\s*", "\n", re.sub(r"[ \t\r\f\v]+", " ", text)).strip()


class OffsetTokenizer(Protocol):
    """A fast tokenizer that gives each token's character span (Hugging Face's ``return_offsets_mapping``)."""

    def __call__(self, text: str, *, add_special_tokens: bool, return_offsets_mapping: bool, verbose: bool
                 ) -> Mapping[str, Sequence[tuple[int, int]]]: ...


class Chunker:
    """Splits text into windows of ``size`` tokens that overlap by ``overlap`` tokens."""

    def __init__(self, size: int = 200, overlap: int = 40, tokenizer: OffsetTokenizer | None = None) -> None:
        if size <= 0:
            raise ConfigError(f"chunk size must be > 0 tokens, got {size}")
        if not 0 <= overlap < size:
            raise ConfigError(f"chunk overlap must be in [0, {size}) tokens, got {overlap}")
        self.size, self.overlap, self.tokenizer = size, overlap, tokenizer

    @property
    def unit(self) -> str:
        return "tokens" if self.tokenizer is not None else "words"

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the tokens (or words) of ``text``."""
        if self.tokenizer is not None:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            return [(a, b) for a, b in enc["offset_mapping"] if b > a]
        return [m.span() for m in re.finditer(r"\S+", text)]

    def chunks(self, text: str) -> list[str]:
        """The chunk texts, in order; empty for text with no tokens."""
        spans = self.spans(text)
        out: list[str] = []
        step = self.size - self.overlap
        start = 0
        while start < len(spans):
            end = min(start + self.size, len(spans))
            out.append(text[spans[start][0]:spans[end - 1][1]])
            if end == len(spans):
                break
            start += step
        return out
