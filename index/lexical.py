"""The lexical side of a collection: one analyser for documents and queries, and BM25 term weights.

Both backends index the *analysed* tokens, so they tokenise alike and a query is analysed exactly as the
documents were: the FAISS store keeps the token string in an SQLite FTS5 table ranked by ``bm25()``; the
Qdrant store keeps a sparse vector of BM25 term-frequency weights in each point and lets Qdrant apply the
IDF (``Modifier.IDF``). The analyser's settings are recorded in the collection (manifest and store) and
reloaded from there, so changing the defaults here never silently changes an existing index.

Analysis, in order: Unicode NFKC, identifier splitting (``snake_case``, ``camelCase``, ``dotted.names`` and
hyphenated codes such as ``ERR-4012`` yield their parts plus the whole name as one token, so an exact
identifier still matches best), Unicode
case folding, stop words (Lucene's English set, the one Elasticsearch's ``_english_`` uses) and Snowball
stemming (``snowballstemmer``; the whole-identifier token is not stemmed). Tokens are runs of letters and
digits only, which FTS5's ``unicode61`` tokenizer keeps intact.
"""

from __future__ import annotations

import math
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import cast

from omniret.errors import ConfigError
from omniret.types import JSON

#: payload fields whose text the lexical index takes, in this order (a PDF page's text layer and text
#: chunks are ``text``; captions and titles come from item metadata)
TEXT_FIELDS = ("title", "caption", "text")

#: Lucene's English stop words (Elasticsearch ``_english_``): short, and safe for identifiers and codes
ENGLISH_STOPWORDS = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not",
    "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was",
    "will", "with"))

_RUN = re.compile(r"\w+(?:[.\-]\w+)*")
_SEP = re.compile(r"[._\-]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z0-9]+|[A-Z0-9]+")
_ALNUM = re.compile(r"[^\W_]+")
#: distinct words/identifiers whose terms an analyser keeps before starting its cache afresh
_RUN_CACHE = 200_000


def _is_mapping(x: object) -> bool:
    return isinstance(x, Mapping)


@dataclass(frozen=True)
class AnalyzerConfig:
    """What the analyser does; stored with the collection as a plain dict (``to_dict``).

    ``language``: the Snowball stemmer's language, or None for no stemming. ``stopwords``: True for the
    English set, False for none, or an explicit list. ``k1``/``b``/``avg_doc_len``: BM25 parameters of the
    Qdrant side (its points are written one by one, so document length is normalised against a fixed
    average, as fastembed's BM25 does; FTS5 uses its own running average).
    """

    language: str | None = "english"
    stopwords: bool | tuple[str, ...] = True
    split_identifiers: bool = True
    k1: float = 1.2
    b: float = 0.75
    avg_doc_len: float = 100.0
    version: int = 1

    def to_dict(self) -> dict[str, JSON]:
        d: dict[str, JSON] = asdict(self)
        if isinstance(self.stopwords, tuple):
            d["stopwords"] = list(self.stopwords)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, object] | AnalyzerConfig | None, *, where: str = "lexical"
                  ) -> AnalyzerConfig:
        """Validate a stored or user-given config; ``ConfigError`` names the bad field."""
        if d is None:
            return cls()
        if isinstance(d, AnalyzerConfig):
            return d
        if not _is_mapping(d):  # JSON or a caller's value: checked, not trusted
            raise ConfigError(f"{where}: expected a dict of analyser settings, got {type(d).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown analyser setting(s) {unknown}; known: {', '.join(sorted(known))}")
        sw = d.get("stopwords", True)
        stopwords: bool | tuple[str, ...]
        if isinstance(sw, (list, tuple)):
            words = tuple(cast("Sequence[object]", sw))
            if not all(isinstance(w, str) for w in words):
                raise ConfigError(f"{where}.stopwords: a list of words, got {sw!r}")
            stopwords = tuple(w for w in words if isinstance(w, str))
        elif isinstance(sw, bool):
            stopwords = sw
        else:
            raise ConfigError(f"{where}.stopwords: true, false or a list of words, got {sw!r}")
        lang = d.get("language", "english")
        if lang is not None:
            import snowballstemmer  # pyright: ignore[reportMissingTypeStubs]

            if not isinstance(lang, str) or lang not in snowballstemmer.algorithms():
                raise ConfigError(f"{where}.language={lang!r}: not a Snowball language; choose one of "
                                  f"{', '.join(snowballstemmer.algorithms())} or null for no stemming")
        nums: dict[str, float] = {}
        for name, lo in (("k1", 0.0), ("b", 0.0), ("avg_doc_len", 1e-9)):
            v = d.get(name, getattr(cls, name))
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo:
                raise ConfigError(f"{where}.{name}={v!r}: must be a finite number >= {lo:g}")
            nums[name] = float(v)
        if not 0.0 <= nums["b"] <= 1.0:
            raise ConfigError(f"{where}.b={d['b']!r}: must be between 0 and 1")
        split = d.get("split_identifiers", cls.split_identifiers)
        if not isinstance(split, bool):
            raise ConfigError(f"{where}.split_identifiers={split!r}: must be true or false")
        version = d.get("version", cls.version)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ConfigError(f"{where}.version={version!r}: must be an int")
        return cls(language=lang, stopwords=stopwords, split_identifiers=split, k1=nums["k1"], b=nums["b"],
                   avg_doc_len=nums["avg_doc_len"], version=version)


@dataclass(frozen=True)
class Analyzer:
    """Text to index terms (see the module docstring); the same for documents and queries."""

    config: AnalyzerConfig = field(default_factory=AnalyzerConfig)

    @cached_property
    def _stop(self) -> frozenset[str]:
        sw = self.config.stopwords
        if sw is True:
            return ENGLISH_STOPWORDS
        if sw is False:
            return frozenset()
        return frozenset(w.casefold() for w in sw)

    @cached_property
    def _stem(self) -> Callable[[str], str]:
        if self.config.language is None:
            return lambda w: w
        import snowballstemmer  # pyright: ignore[reportMissingTypeStubs]

        # snowballstemmer ships no type information: its stemmers take and return str
        stem_word = cast("Callable[[str], str]", snowballstemmer.stemmer(self.config.language).stemWord)  # pyright: ignore[reportUnknownMemberType]
        cache: dict[str, str] = {}

        def stem(w: str) -> str:
            s = cache.get(w)
            if s is None:
                s = cache[w] = stem_word(w)
            return s

        return stem

    @cached_property
    def _runs(self) -> dict[str, tuple[str, ...]]:
        """Terms of each word or identifier seen so far: text is Zipfian, so most runs are cache hits."""
        return {}

    def _run_terms(self, run: str) -> tuple[str, ...]:
        stop, stem = self._stop, self._stem
        if not self.config.split_identifiers:
            w = run.casefold()
            return () if w in stop else (stem(w),)
        parts: list[str] = []
        for seg in _SEP.split(run):
            if not seg:
                continue
            if seg.isascii():
                parts.extend(_CAMEL.findall(seg) or [seg])
            else:
                parts.extend(_ALNUM.findall(seg))
        parts = [p.casefold() for p in parts]
        terms = [stem(p) for p in parts if p not in stop]
        if len(parts) > 1:
            terms.append("".join(parts))  # the whole identifier, unstemmed
        return tuple(terms)

    def tokens(self, text: str) -> list[str]:
        """Index terms of ``text`` in order (repeats kept: they are term frequencies)."""
        if not text:
            return []
        text = unicodedata.normalize("NFKC", text)
        cache = self._runs
        if len(cache) > _RUN_CACHE:
            cache.clear()
        out: list[str] = []
        for run in (_RUN if self.config.split_identifiers else _ALNUM).findall(text):
            terms = cache.get(run)
            if terms is None:
                terms = cache[run] = self._run_terms(run)
            out.extend(terms)
        return out

    def query_terms(self, text: str) -> list[str]:
        """The distinct terms of a query, first occurrence order (BM25 sums each term once)."""
        return list(dict.fromkeys(self.tokens(text)))


def analyzer(config: Mapping[str, object] | AnalyzerConfig | None = None) -> Analyzer:
    """An ``Analyzer`` from a stored config dict (None: the defaults)."""
    return Analyzer(AnalyzerConfig.from_dict(config))


def payload_text(payload: Mapping[str, object]) -> str:
    """The text a stored item offers the lexical index (title, caption, text), or ``""`` when none."""
    parts: list[str] = []
    for key in TEXT_FIELDS:
        v = payload.get(key)
        if isinstance(v, str) and v.strip() and not v.startswith("data:"):
            parts.append(v)
        elif isinstance(v, list):
            parts.extend(s for s in cast("list[object]", v) if isinstance(s, str) and s.strip())
    return "\n".join(parts)


def term_id(term: str) -> int:
    """The sparse-vector index of a term: CRC32, stable across processes and machines (Qdrant takes u32)."""
    return zlib.crc32(term.encode("utf-8"))


def bm25_doc_vector(tokens: Iterable[str], config: AnalyzerConfig) -> tuple[list[int], list[float]]:
    """``(indices, values)`` of a document's BM25 term-frequency weights; Qdrant multiplies in the IDF."""
    tf = Counter(tokens)
    dl = sum(tf.values())
    if not dl:
        return [], []
    k1, b = config.k1, config.b
    norm = k1 * (1.0 - b + b * dl / config.avg_doc_len)
    weights: dict[int, float] = {}
    for term, n in tf.items():
        i = term_id(term)
        # a CRC32 collision merges two terms' counts; rare enough at 2^32 not to matter for ranking
        weights[i] = weights.get(i, 0.0) + n * (k1 + 1.0) / (n + norm)
    idx = sorted(weights)
    return idx, [weights[i] for i in idx]


def bm25_query_vector(terms: Iterable[str]) -> tuple[list[int], list[float]]:
    """``(indices, values)`` of a query: each distinct term once, weight 1 (the IDF comes from Qdrant)."""
    idx = sorted({term_id(t) for t in terms})
    return idx, [1.0] * len(idx)


def fts_match(terms: Iterable[str]) -> str:
    """An FTS5 ``MATCH`` expression: any of the terms, each quoted (terms are letters and digits only)."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
