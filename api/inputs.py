"""Request inputs -> ``Item`` objects, with the service's safety checks applied first.

Media in a request arrive as ``data:`` URIs. URLs are refused unless ``allow_remote_urls`` (SSRF);
anything else would name a file on the server and is refused unless ``allow_local_paths`` (path
traversal). Images are measured from their header before decoding (decompression bombs:
``max_image_pixels``), videos probed for their length (``max_video_seconds``). Every refusal is an
``ApiError`` naming the field and the item, raised before any model work.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

from omniret.api.errors import ApiError, item_error
from omniret.errors import ItemError
from omniret.settings import Settings
from omniret.types import Item

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,",
                       re.ASCII)
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_ITEM_KEYS = {"text", "image", "video", "fps", "max_frames", "instruction", "id", "metadata"}
_VIDEO_SUFFIX = {"video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov", "video/x-matroska": ".mkv",
                 "video/x-msvideo": ".avi", "video/mpeg": ".mpg"}


class _Bad(Exception):
    """A reason an input is refused (turned into an item error by the caller)."""


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    """``(mime type, bytes)`` of a ``data:`` URI; raises ``_Bad`` when it is malformed."""
    m = _DATA_URI.match(uri)
    if not m:
        raise _Bad("malformed data: URI (expected data:<mime>;base64,<data>)")
    payload = uri[m.end():]
    if not m.group("b64"):
        raise _Bad("data: URI must be base64-encoded (data:<mime>;base64,<data>)")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise _Bad(f"data: URI is not valid base64 ({e})") from e
    return (m.group("mime") or "application/octet-stream").lower(), data


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height from the image header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # our own pixel limit applies below; PIL's bomb warning must not fire (or error) first
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return im.size
    except Image.DecompressionBombError as e:
        raise _Bad(f"image is too large to decode ({e})") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise _Bad(f"not a decodable image ({type(e).__name__})") from e


def video_seconds(path: Path) -> float:
    """Duration of a video file in seconds (container header, else the stream's frames / rate)."""
    import av

    try:
        with av.open(str(path)) as container:
            if container.duration:
                return float(container.duration) / av.time_base
            streams = container.streams.video
            if not streams:
                raise _Bad("no video stream in the file")
            s = streams[0]
            if s.duration and s.time_base:
                return float(s.duration * s.time_base)
            if s.frames and s.average_rate:
                return float(s.frames / s.average_rate)
            return 0.0
    except _Bad:
        raise
    except Exception as e:  # noqa: BLE001 - PyAV raises many kinds for a broken file
        raise _Bad(f"not a decodable video ({type(e).__name__})") from e


class InputConverter:
    """Turns one request's inputs into items; holds the temporary files that videos need.

    Use as a context manager: the temporary files are removed on exit (after the model ran).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
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
    def items(self, raw: Any, *, field: str = "input", instruction: str | None = None) -> list[Item]:
        """Items from an OpenAI-style ``input`` (a string or a list of strings / media objects)."""
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list):
            raise ApiError(400, "invalid_request", f"{field}: expected a string or a list, got "
                           f"{type(raw).__name__}", field=field)
        if not raw:
            raise ApiError(400, "invalid_request", f"{field}: must not be empty", field=field)
        if all(isinstance(x, int) and not isinstance(x, bool) for x in raw) or any(
                isinstance(x, list) and x and all(isinstance(t, int) for t in x) for x in raw):
            raise ApiError(400, "invalid_request", f"{field}: token-id arrays are not supported; send text",
                           field=field)
        limit = self.settings.max_items_per_request
        if len(raw) > limit:
            raise ApiError(413, "too_many_items", f"{field}: {len(raw)} items, over the limit of {limit} "
                           "per request (max_items_per_request)", field=field)
        out, errors = [], []
        for i, obj in enumerate(raw):
            try:
                out.append(self.item(obj, i, instruction=instruction))
            except ItemError as e:
                errors.append(e)
        if errors:
            raise item_error(ItemError.combine(errors), field=field)
        return out

    def one(self, obj: Any, *, field: str, instruction: str | None = None) -> Item:
        """A single item (a rerank query, a search query)."""
        try:
            return self.item(obj, None, instruction=instruction)
        except ItemError as e:
            raise item_error(e, field=field) from None

    def item(self, obj: Any, index: int | None, *, instruction: str | None = None) -> Item:
        """One item from a string or a media object; raises ``ItemError`` naming it."""
        if isinstance(obj, str):
            if not obj.strip():
                raise ItemError.for_item(index, None, "empty text")
            return Item(text=obj, instruction=instruction)
        if not isinstance(obj, dict):
            raise ItemError.for_item(index, None, f"expected a string or an object, got {type(obj).__name__}")
        item_id = obj.get("id")
        unknown = sorted(set(obj) - _ITEM_KEYS)
        if unknown:
            raise ItemError.for_item(index, item_id, f"unknown key(s) {unknown}; an item takes "
                                     f"{sorted(_ITEM_KEYS)}")
        d = dict(obj)
        text = d.get("text")
        if text is not None:
            texts = [text] if isinstance(text, str) else text
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise ItemError.for_item(index, item_id, "text must be a string or a list of strings")
            if not "".join(texts).strip():
                raise ItemError.for_item(index, item_id, "empty text")
        try:
            if d.get("image") is not None:
                d["image"] = self._images(d["image"])
            if d.get("video") is not None:
                d["video"] = self._video(d["video"])
        except _Bad as e:
            raise ItemError.for_item(index, item_id, str(e)) from None
        if d.get("text") is None and d.get("image") is None and d.get("video") is None:
            raise ItemError.for_item(index, item_id, "empty item: give text, image or video")
        if d.get("instruction") is None and instruction is not None:
            d["instruction"] = instruction
        if d.get("metadata") is not None and not isinstance(d["metadata"], dict):
            raise ItemError.for_item(index, item_id, "metadata must be an object")
        return Item.from_dict(d, index=index)

    # -- media -------------------------------------------------------------------------------------
    def _images(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._image(v) for v in value]
        return self._image(value)

    def _image(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise _Bad(f"image must be a data: URI string, got {type(value).__name__}")
        if value.startswith("data:"):
            mime, data = decode_data_uri(value)
            if not mime.startswith("image/"):
                raise _Bad(f"image data: URI has type {mime}, expected image/*")
            self._check_pixels(data)
            return data
        return self._check_reference(value, "image")

    def _check_pixels(self, data: bytes) -> None:
        w, h = image_size(data)
        limit = self.settings.max_image_pixels
        if w * h > limit:
            raise _Bad(f"image is {w}x{h} = {w * h} pixels, over the limit of {limit} (max_image_pixels)")

    def _video(self, value: Any) -> Any:
        if isinstance(value, list):  # one video as a list of frames
            if not value:
                raise _Bad("video frame list is empty")
            return [self._image(v) for v in value]
        if not isinstance(value, str):
            raise _Bad(f"video must be a data: URI string or a list of frames, got {type(value).__name__}")
        if value.startswith("data:"):
            mime, data = decode_data_uri(value)
            if not mime.startswith("video/"):
                raise _Bad(f"video data: URI has type {mime}, expected video/*")
            path = self._tmpfile(data, _VIDEO_SUFFIX.get(mime, ".mp4"))
            self._check_seconds(path)
            return str(path)
        ref = self._check_reference(value, "video")
        if not _URL.match(ref):
            self._check_seconds(Path(ref))
        return ref

    def _check_seconds(self, path: Path) -> None:
        seconds = video_seconds(path)
        limit = self.settings.max_video_seconds
        if seconds > limit:
            raise _Bad(f"video is {seconds:.1f} s long, over the limit of {limit:g} s (max_video_seconds)")

    def _check_reference(self, value: str, kind: str) -> str:
        """A URL or a server path: refused unless the settings allow that kind of reference."""
        if _URL.match(value) and not value.lower().startswith("file://"):
            if not value.lower().startswith(("http://", "https://")):
                raise _Bad(f"{kind}: only data: URIs and http(s) URLs are accepted")
            if not self.settings.allow_remote_urls:
                raise _Bad(f"{kind}: remote URLs are not fetched by this server (allow_remote_urls is off); "
                           "send the bytes as a data: URI")
            return value
        if not self.settings.allow_local_paths:
            raise _Bad(f"{kind}: server-side paths are not read by this server (allow_local_paths is off); "
                       "send the bytes as a data: URI")
        path = Path(value[7:] if value.lower().startswith("file://") else value)
        if not path.is_file():
            raise _Bad(f"{kind}: no such file on the server: {path}")
        return str(path)

    def _tmpfile(self, data: bytes, suffix: str) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="omniret-req-")
        path = Path(self._tmp.name) / f"{len(list(Path(self._tmp.name).iterdir()))}{suffix}"
        path.write_bytes(data)
        return path
