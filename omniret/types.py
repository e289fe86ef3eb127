"""The shapes that cross package lines: ``Item`` (one input) and ``Hit`` (one search result)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeAlias, cast

from omniret.errors import ItemError

#: a JSON value (what ``json.loads`` returns): payloads, filters, manifests and reports are built from it
JSON: TypeAlias = "str | int | float | bool | None | list[JSON] | dict[str, JSON]"

#: Keys of the reference implementation's input dict, plus omniret's ``id`` and ``metadata`` and
#: qwen-vl-utils' ``video_start``/``video_end``.
ITEM_KEYS = ("text", "image", "video", "fps", "max_frames", "video_start", "video_end", "instruction", "id",
             "metadata")


@dataclass
class Item:
    """One thing to embed or rerank: text, images, video, or any mix of them.

    Keys mirror the reference's input dict so code ports unchanged:

    - ``text``: a string or a list of strings (joined with nothing between them).
    - ``image``: a path, ``bytes``, a ``PIL.Image.Image``, a ``data:image/...;base64,`` URI, or a list of them.
    - ``video``: a video file's path; or a list of frames (PIL images or image paths) that is one video;
      or a list of videos.
    - ``fps`` / ``max_frames``: sampling of video *files*.
    - ``video_start`` / ``video_end``: a time span (seconds) of a video file, as qwen-vl-utils takes it;
      ingestion uses it for video segments.
    - ``instruction``: overrides the call's instruction for this item.
    - ``id`` / ``metadata``: carried through to results and payloads.

    An item with nothing in it embeds as the text ``NULL``, as in the reference.
    """

    text: str | list[str] | None = None
    image: Any = None
    video: Any = None
    fps: float | None = None
    max_frames: int | None = None
    video_start: float | None = None
    video_end: float | None = None
    instruction: str | None = None
    id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict[str, Any])

    @classmethod
    def from_dict(cls, obj: object, *, index: int | None = None) -> Item:
        """Build an item from the reference's input dict (``{"text", "image", "video", ...}``)."""
        if not isinstance(obj, dict):
            raise ItemError.for_item(index, None, f"expected a dict with keys {ITEM_KEYS}, got {type(obj).__name__}")
        d = cast(dict[str, Any], obj)
        unknown = sorted(set(d) - set(ITEM_KEYS))
        if unknown:
            raise ItemError.for_item(index, d.get("id"),
                                     f"unknown key(s) {unknown}; an item takes {list(ITEM_KEYS)}")
        kwargs: dict[str, Any] = {k: d[k] for k in ITEM_KEYS if k in d}
        if kwargs.get("metadata") is None:
            kwargs["metadata"] = {}
        if kwargs.get("id") is not None:
            kwargs["id"] = str(kwargs["id"])
        return cls(**kwargs)

    @classmethod
    def coerce(cls, obj: object, *, index: int | None = None) -> Item:
        """Accept an ``Item``, a plain string (text) or a reference-style dict."""
        if isinstance(obj, Item):
            return obj
        if isinstance(obj, str):
            return cls(text=obj)
        if isinstance(obj, dict):
            return cls.from_dict(cast(dict[str, Any], obj), index=index)
        raise ItemError.for_item(index, None,
                                 f"cannot use a {type(obj).__name__} as an item; pass an Item, a str or a dict")

    def to_dict(self) -> dict[str, Any]:
        """The reference-style dict (JSON-friendly when the media are paths)."""
        out: dict[str, Any] = {}
        for k in ITEM_KEYS:
            v = getattr(self, k)
            if v is None or (k == "metadata" and not v):
                continue
            out[k] = str(v) if isinstance(v, Path) else v
        return out

    @property
    def texts(self) -> list[str]:
        if self.text is None:
            return []
        return [self.text] if isinstance(self.text, str) else list(self.text)

    @property
    def images(self) -> list[Any]:
        if self.image is None:
            return []
        image: Any = self.image
        return list(cast(list[Any], image)) if isinstance(image, (list, tuple)) else [image]

    @property
    def videos(self) -> list[Any]:
        """The item's videos: each a file path or a list of frames."""
        v: Any = self.video
        if v is None:
            return []
        if isinstance(v, (str, Path)):
            return [v]
        if isinstance(v, (list, tuple)):
            seq = list(cast(list[Any], v))
            if not seq:
                return []
            if _is_frame_list(seq):
                return [seq]
            return seq
        return [v]

    @property
    def modalities(self) -> set[str]:
        """Which modalities the item holds (``text``, ``image``, ``video``)."""
        out: set[str] = set()
        if self.texts:
            out.add("text")
        if self.images:
            out.add("image")
        if self.videos:
            out.add("video")
        return out

    @property
    def is_empty(self) -> bool:
        return not self.modalities


#: file suffixes read as images (ingestion, the API's thumbnails, frame lists)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
#: the reference also counts ``.svg`` when it decides whether a list of paths is one video's frames
_FRAME_SUFFIXES = IMAGE_SUFFIXES | {".svg"}


def _is_frame_list(v: list[Any] | tuple[Any, ...]) -> bool:
    """True when a list is one video's frames (PIL images or image paths), as the reference decides it."""
    first = v[0]
    try:
        from PIL import Image
        if isinstance(first, Image.Image):
            return True
    except ImportError:  # pragma: no cover - pillow is a dependency
        pass
    if isinstance(first, (str, Path)):
        return Path(str(first).split("?", 1)[0]).suffix.lower() in _FRAME_SUFFIXES
    return False


#: what the model APIs accept for one input: an ``Item``, a plain string (text) or an item dict
ItemLike = Item | str | dict[str, Any]


@dataclass
class Hit:
    """One search result: the stored item's id, its scores and its payload.

    ``score`` is the first-stage score the hit was ranked by: the vector similarity (``mode="dense"``), the
    BM25 score (``"lexical"``) or the fused score (``"hybrid"``). ``dense_score`` / ``lexical_score`` are
    that side's own score (None when the side did not return the hit), ``fused_score`` the hybrid score,
    ``rerank_score`` the cross-encoder's relevance in [0, 1] when the hit was reranked. The payload holds
    the source location (``source``, ``page``,
    ``chunk``, ``start``/``end`` seconds for video) and whatever metadata the item carried.
    """

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict[str, Any])
    rerank_score: float | None = None
    dense_score: float | None = None
    lexical_score: float | None = None
    fused_score: float | None = None

    @property
    def final_score(self) -> float:
        """The score the hit is ordered by: the reranker's when present, else the first-stage score."""
        return self.rerank_score if self.rerank_score is not None else self.score

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
