"""Request inputs -> ``Item`` objects, with the service's safety checks applied first.

Media in a request arrive as ``data:`` URIs. URLs are refused unless ``allow_remote_urls`` (SSRF);
anything else would name a file on the server and is refused unless ``allow_local_paths`` (path
traversal). Images are measured from their header before decoding (decompression bombs:
``max_image_pixels``), videos probed for their length (``max_video_seconds``). Text is refused above
``max_text_chars`` and, below it, cut to what the model can read before it is tokenised; a lone UTF-16
surrogate anywhere (valid JSON, not encodable text) is refused naming the field (``check_text``). Every
refusal is an ``ApiError`` naming the field and the item, raised before any model work.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import cast

from pydantic import BaseModel

from omniret.api.errors import ApiError, item_error
from omniret.errors import ItemError
from omniret.settings import Settings
from omniret.types import Item

#: a surrogate code point left in a decoded JSON string: JSON allows "\ud800", UTF-8 cannot hold it
_SURROGATE = re.compile("[\ud800-\udfff]")
#: characters kept per token the model reads: text beyond ``max_tokens * this`` cannot reach the model
#: (a token is far shorter than 32 characters in any tokenizer's ordinary text), so it is cut cheaply
#: before tokenising instead of being tokenised and thrown away
CHARS_PER_TOKEN_BOUND = 32


def as_list(value: object) -> list[object] | None:
    """``value`` as a JSON array whose elements are still to be checked, or None when it is not one."""
    return cast("list[object]", value) if isinstance(value, list) else None


def as_object(value: object) -> dict[str, object] | None:
    """``value`` as a JSON object whose values are still to be checked, or None when it is not one."""
    return cast("dict[str, object]", value) if isinstance(value, dict) else None


def check_text(value: object, field: str) -> None:
    """400 naming the field when any string in ``value`` (keys included) holds a lone UTF-16 surrogate."""
    if isinstance(value, str):
        m = _SURROGATE.search(value)
        if m:
            raise ApiError(400, "invalid_text", f"{field}: contains a lone UTF-16 surrogate "
                           f"(U+{ord(m.group()):04X}) at character {m.start()}; send valid Unicode text",
                           field=field)
    elif (obj := as_object(value)) is not None:
        for k, v in obj.items():
            check_text(k, f"{field} (a key)")
            check_text(v, f"{field}.{k}")
    elif (arr := as_list(value)) is not None:
        for i, v in enumerate(arr):
            check_text(v, f"{field}[{i}]")


def content_id(obj: str | Mapping[str, object]) -> str:
    """An item id from its content (text, media bytes, sampling, instruction; not metadata): the same
    content added twice gets the same id, so re-adding it replaces instead of duplicating."""
    if isinstance(obj, str):
        obj = {"text": obj}
    content = {k: obj.get(k) for k in ("text", "image", "video", "fps", "max_frames", "instruction")
               if obj.get(k) is not None}
    blob = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def model_max_tokens(model: object) -> int | None:
    """The longest input, in tokens, an embedder or reranker reads (None when it does not say)."""
    for path in ("options.max_length", "max_length", "model.max_seq_length", "max_seq_length"):
        obj: object = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, int) and not isinstance(obj, bool) and obj > 0:
            return obj
    return None

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,",
                       re.ASCII)
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_ITEM_KEYS = {"text", "image", "video", "fps", "max_frames", "instruction", "id", "metadata"}
_VIDEO_SUFFIX = {"video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov", "video/x-matroska": ".mkv",
                 "video/x-msvideo": ".avi", "video/mpeg": ".mpg"}


class InputRefused(Exception):
    """A reason an input is refused (turned into an item error by the caller)."""


def decode_media_uri(uri: str, kind: str) -> tuple[str, bytes]:
    """``decode_data_uri`` for a medium: ``kind`` (``image``, ``video``) must be the MIME type's top level."""
    mime, data = decode_data_uri(uri)
    if not mime.startswith(f"{kind}/"):
        raise InputRefused(f"{kind} data: URI has type {mime}, expected {kind}/*")
    return mime, data


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    """``(mime type, bytes)`` of a ``data:`` URI; raises ``InputRefused`` when it is malformed."""
    m = _DATA_URI.match(uri)
    if not m:
        raise InputRefused("malformed data: URI (expected data:<mime>;base64,<data>)")
    payload = uri[m.end():]
    if not m.group("b64"):
        raise InputRefused("data: URI must be base64-encoded (data:<mime>;base64,<data>)")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InputRefused(f"data: URI is not valid base64 ({e})") from e
    return (m.group("mime") or "application/octet-stream").lower(), data


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height from the image header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # our own pixel limit applies below; PIL's bomb warning must not fire (or error) first
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))  # bound first: pyright loses the type through its __enter__
            with im:
                return im.size
    except Image.DecompressionBombError as e:
        raise InputRefused(f"image is too large to decode ({e})") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InputRefused(f"not a decodable image ({type(e).__name__})") from e


def video_seconds(path: Path) -> float:
    """Duration of a video file in seconds (container header, else the stream's frames / rate)."""
    import av

    try:
        container = av.open(str(path))  # bound first: pyright loses the type through its __enter__
        with container:
            if container.duration:
                return float(container.duration) / av.time_base
            streams = container.streams.video
            if not streams:
                raise InputRefused("no video stream in the file")
            s = streams[0]
            if s.duration and s.time_base:
                return float(s.duration * s.time_base)
            if s.frames and s.average_rate:
                return float(s.frames / s.average_rate)
            return 0.0
    except InputRefused:
        raise
    except Exception as e:  # noqa: BLE001 - PyAV raises many kinds for a broken file
        raise InputRefused(f"not a decodable video ({type(e).__name__})") from e


class InputConverter:
    """Turns one request's inputs into items; holds the temporary files that videos need.

    Use as a context manager: the temporary files are removed on exit (after the model ran).
    """

    def __init__(self, settings: Settings, *, max_tokens: int | None = None, with_ids: bool = False,
                 reserved_metadata: frozenset[str] = frozenset()) -> None:
        """``max_tokens``: what the model reads (text past its character bound is cut before tokenising);
        ``with_ids``: items without an ``id`` get one from their content (collection adds);
        ``reserved_metadata``: metadata keys refused (the collection's own payload fields)."""
        self.settings = settings
        self.reserved = reserved_metadata
        self.read_chars = max_tokens * CHARS_PER_TOKEN_BOUND if max_tokens else None
        self.with_ids = with_ids
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> InputConverter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def temp_dir(self) -> Path | None:
        """Where this request's temporary media files are (removed on exit), if any."""
        return Path(self._tmp.name) if self._tmp is not None else None

    # -- public ------------------------------------------------------------------------------------
    def items(self, raw: object, *, field: str = "input", instruction: str | None = None) -> list[Item]:
        """Items from an OpenAI-style ``input`` (a string or a list of strings / media objects); one bad
        item refuses the request (400 listing every bad one)."""
        good, errors = self.partition(raw, field=field, instruction=instruction)
        if errors:
            raise item_error(ItemError.combine(errors), field=field)
        return [it for _, it in good]

    def partition(self, raw: object, *, field: str = "input", instruction: str | None = None
                  ) -> tuple[list[tuple[int, Item]], list[ItemError]]:
        """The usable items with their input index, and an error for each bad one (``on_error=skip``).

        Request-level problems (not a list, empty, token ids, too many) are still refused outright.
        """
        given = [raw] if isinstance(raw, str) else as_list(raw)
        if given is None:
            raise ApiError(400, "invalid_request", f"{field}: expected a string or a list, got "
                           f"{type(raw).__name__}", field=field)
        raw = given
        if not raw:
            raise ApiError(400, "invalid_request", f"{field}: must not be empty", field=field)
        if all(isinstance(x, int) and not isinstance(x, bool) for x in raw) or any(
                (ids := as_list(x)) and all(isinstance(t, int) for t in ids) for x in raw):
            raise ApiError(400, "invalid_request", f"{field}: token-id arrays are not supported; send text "
                           "(LangChain's OpenAIEmbeddings sends token ids unless check_embedding_ctx_length=False)",
                           field=field)
        limit = self.settings.max_items_per_request
        if len(raw) > limit:
            raise ApiError(413, "too_many_items", f"{field}: {len(raw)} items, over the limit of {limit} "
                           "per request (max_items_per_request)", field=field)
        check_text(raw, field)
        out: list[tuple[int, Item]] = []
        errors: list[ItemError] = []
        for i, obj in enumerate(raw):
            try:
                out.append((i, self.item(obj, i, instruction=instruction)))
            except ItemError as e:
                errors.append(e)
        return out, errors

    def one(self, obj: object, *, field: str, instruction: str | None = None) -> Item:
        """A single item (a rerank query, a search query)."""
        check_text(obj, field)
        try:
            return self.item(obj, None, instruction=instruction)
        except ItemError as e:
            raise item_error(e, field=field) from None

    def item(self, raw: object, index: int | None, *, instruction: str | None = None) -> Item:
        """One item from a string or a media object; raises ``ItemError`` naming it."""
        if isinstance(raw, str):
            if not raw.strip():
                raise ItemError.for_item(index, None, "empty text")
            return Item(text=self._text(raw, index, None), instruction=instruction,
                        id=content_id(raw) if self.with_ids else None)
        obj = as_object(raw)
        if obj is None:
            raise ItemError.for_item(index, None, f"expected a string or an object, got {type(raw).__name__}")
        item_id = obj.get("id")
        unknown = sorted(set(obj) - _ITEM_KEYS)
        if unknown:
            raise ItemError.for_item(index, item_id, f"unknown key(s) {unknown}; an item takes "
                                     f"{sorted(_ITEM_KEYS)}")
        d = dict(obj)
        text = d.get("text")
        if text is not None:
            texts = [text] if isinstance(text, str) else as_list(text)
            if texts is None or not all(isinstance(t, str) for t in texts):
                raise ItemError.for_item(index, item_id, "text must be a string or a list of strings")
            texts = cast("list[str]", texts)
            if not "".join(texts).strip():
                raise ItemError.for_item(index, item_id, "empty text")
            cut = [self._text(t, index, item_id) for t in texts]
            d["text"] = cut[0] if isinstance(text, str) else cut
        if item_id is not None and (isinstance(item_id, bool) or not isinstance(item_id, (str, int))):
            raise ItemError.for_item(index, None, f"id must be a string, got {type(item_id).__name__}")
        if item_id is None and self.with_ids:
            d["id"] = content_id({**obj, "instruction": obj.get("instruction", instruction)})
        try:
            if d.get("image") is not None:
                d["image"] = self._images(d["image"])
            if d.get("video") is not None:
                d["video"] = self._video(d["video"])
        except InputRefused as e:
            raise ItemError.for_item(index, item_id, str(e)) from None
        if d.get("text") is None and d.get("image") is None and d.get("video") is None:
            raise ItemError.for_item(index, item_id, "empty item: give text, image or video")
        if d.get("instruction") is None and instruction is not None:
            d["instruction"] = instruction
        given_metadata = d.get("metadata")
        metadata = as_object(given_metadata) if given_metadata is not None else {}
        if metadata is None:
            raise ItemError.for_item(index, item_id, "metadata must be an object")
        taken = sorted(set(metadata) & self.reserved)
        if taken:
            raise ItemError.for_item(index, item_id, f"metadata key(s) {taken} are reserved for the item's own "
                                     "fields; rename them")
        return Item.from_dict(d, index=index)

    def _text(self, text: str, index: int | None, item_id: object) -> str:
        limit = self.settings.max_text_chars
        if len(text) > limit:
            raise ItemError.for_item(index, item_id, f"text is {len(text)} characters, over the limit of {limit} "
                                     "(max_text_chars)")
        if self.read_chars is not None and len(text) > self.read_chars:
            return text[: self.read_chars]  # the model would truncate it anyway, after tokenising all of it
        return text

    # -- media -------------------------------------------------------------------------------------
    def _images(self, value: object) -> bytes | str | list[bytes | str]:
        if (images := as_list(value)) is not None:
            return [self._image(v, f"image[{i}]") for i, v in enumerate(images)]
        return self._image(value, "image")

    def _image(self, value: object, where: str) -> bytes | str:
        """The bytes of a data: URI, or a URL / server path the settings allow."""
        if not isinstance(value, str):
            raise InputRefused(f"{where}: image must be a data: URI string, got {type(value).__name__}")
        if value.startswith("data:"):
            try:
                _, data = decode_media_uri(value, "image")
                self._check_pixels(data)
            except InputRefused as e:
                raise InputRefused(f"{where}: {e}") from None
            return data
        return self._check_reference(value, where)

    def _check_pixels(self, data: bytes) -> None:
        w, h = image_size(data)
        limit = self.settings.max_image_pixels
        if w * h > limit:
            raise InputRefused(f"image is {w}x{h} = {w * h} pixels, over the limit of {limit} (max_image_pixels)")

    def _video(self, value: object) -> str | list[bytes | str]:
        if (frames := as_list(value)) is not None:  # one video as a list of frames
            if not frames:
                raise InputRefused("video: frame list is empty")
            return [self._image(v, f"video[{i}]") for i, v in enumerate(frames)]
        if not isinstance(value, str):
            raise InputRefused(f"video: must be a data: URI string or a list of frames, got {type(value).__name__}")
        if value.startswith("data:"):
            try:
                mime, data = decode_media_uri(value, "video")
                path = self._tmpfile(data, _VIDEO_SUFFIX.get(mime, ".mp4"))
                self._check_seconds(path)
            except InputRefused as e:
                raise InputRefused(f"video: {e}") from None
            return str(path)
        ref = self._check_reference(value, "video")
        if not _URL.match(ref):
            try:
                self._check_seconds(Path(ref))
            except InputRefused as e:
                raise InputRefused(f"video: {e}") from None
        return ref

    def _check_seconds(self, path: Path) -> None:
        seconds = video_seconds(path)
        limit = self.settings.max_video_seconds
        if seconds > limit:
            raise InputRefused(f"video is {seconds:.1f} s long, over the limit of {limit:g} s (max_video_seconds)")

    def _check_reference(self, value: str, kind: str) -> str:
        """A URL or a server path: refused unless the settings allow that kind of reference."""
        if _URL.match(value) and not value.lower().startswith("file://"):
            if not value.lower().startswith(("http://", "https://")):
                raise InputRefused(f"{kind}: only data: URIs and http(s) URLs are accepted")
            if not self.settings.allow_remote_urls:
                raise InputRefused(f"{kind}: remote URLs are not fetched by this server (allow_remote_urls is off); "
                           "send the bytes as a data: URI")
            return value
        if not self.settings.allow_local_paths:
            raise InputRefused(f"{kind}: server-side paths are not read by this server (allow_local_paths is off); "
                       "send the bytes as a data: URI")
        path = Path(value[7:] if value.lower().startswith("file://") else value)
        if not path.is_file():
            raise InputRefused(f"{kind}: no such file on the server: {path}")
        return str(path)

    def _tmpfile(self, data: bytes, suffix: str) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="omniret-req-")
        path = Path(self._tmp.name) / f"{len(list(Path(self._tmp.name).iterdir()))}{suffix}"
        path.write_bytes(data)
        return path


def check_body(body: BaseModel) -> None:
    """``check_text`` over every field of a parsed request body (a pydantic model), naming the field."""
    for k, v in body.model_dump(exclude_none=True).items():
        check_text(v, str(k))
