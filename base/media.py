"""Media loading: images, PDF pages and video frames, with qwen-vl-utils 0.0.14's sizing rules.

Everything that can fail on a bad input fails here, as an ``ItemError`` naming the item and the path,
so the model never sees a half-loaded medium. Images are decoded fully (``img.load()``) so a truncated
file is caught now and not inside a worker later. Video files are read with decord (the reference's
reader), falling back to torchcodec and then PyAV when decord is missing or cannot read the file.
"""

from __future__ import annotations

import base64
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from omniret.errors import ItemError

#: qwen-vl-utils constants (vision_process.py)
MAX_RATIO = 200
FRAME_FACTOR = 2
FPS_MIN_FRAMES = 4
VIDEO_MIN_TOKEN_NUM = 128
VIDEO_MAX_TOKEN_NUM = 768
IMAGE_MIN_TOKEN_NUM = 4
IMAGE_MAX_TOKEN_NUM = 16384
MODEL_SEQ_LEN = 128000


# -- sizing (qwen-vl-utils semantics) -----------------------------------------------------------------
def round_by_factor(number: float, factor: int) -> int:
    """Closest multiple of ``factor`` (Python's ``round``: half to even), as qwen-vl-utils."""
    return round(number / factor) * factor


def ceil_by_factor(number: float, factor: int) -> int:
    return math.ceil(number / factor) * factor


def floor_by_factor(number: float, factor: int) -> int:
    return math.floor(number / factor) * factor


def smart_resize(height: int, width: int, factor: int = 32, min_pixels: float | None = None,
                 max_pixels: float | None = None) -> tuple[int, int]:
    """Target ``(height, width)``: multiples of ``factor``, area in ``[min_pixels, max_pixels]``, aspect kept.

    qwen-vl-utils 0.0.14 ``smart_resize``: round each side to the factor, then scale down (floor) or up
    (ceil) by ``beta`` when the area falls outside the bounds. Raises ``ValueError`` for an aspect ratio
    above 200.
    """
    max_pixels = max_pixels if max_pixels is not None else IMAGE_MAX_TOKEN_NUM * factor ** 2
    min_pixels = min_pixels if min_pixels is not None else IMAGE_MIN_TOKEN_NUM * factor ** 2
    if max_pixels < min_pixels:
        raise ValueError(f"max_pixels ({max_pixels}) must be >= min_pixels ({min_pixels})")
    if min(height, width) <= 0:
        raise ValueError(f"image has no pixels ({width}x{height})")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_RATIO}, got {ratio:g}")
    h_bar = max(factor, round_by_factor(height, factor))
    w_bar = max(factor, round_by_factor(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = floor_by_factor(height / beta, factor)
        w_bar = floor_by_factor(width / beta, factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = ceil_by_factor(height * beta, factor)
        w_bar = ceil_by_factor(width * beta, factor)
    return h_bar, w_bar


# -- images ---------------------------------------------------------------------------------------------
def _describe(obj: Any) -> str:
    if isinstance(obj, (str, Path)):
        s = str(obj)
        return s if len(s) <= 120 else s[:60] + "..." + s[-40:]
    if isinstance(obj, (bytes, bytearray)):
        return f"<{len(obj)} bytes>"
    return f"<{type(obj).__name__}>"


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy: RGBA is composited on white (as qwen-vl-utils), every other mode converted."""
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.split()[3])
        return background
    return image.convert("RGB")


def local_path(obj: str | Path, *, index: int | None = None, item_id: Any = None,
               allow_remote: bool = False, kind: str = "file") -> str:
    """A local file path from a path, a ``file://`` URI; remote URLs are refused unless allowed."""
    s = str(obj)
    if s.startswith(("http://", "https://")):
        if not allow_remote:
            raise ItemError.for_item(index, item_id, f"remote URLs are disabled ({_describe(s)}); download the "
                                                     f"{kind} or enable remote fetching (allow_remote=True)")
        return s
    if s.startswith("file://"):
        s = s[len("file://"):]
    return s


def _fetch_remote(url: str) -> bytes:
    from urllib.request import urlopen

    with urlopen(url, timeout=30) as r:  # noqa: S310 - only when the caller allowed remote fetching
        return r.read()


def load_image(obj: Any, *, index: int | None = None, item_id: Any = None, allow_remote: bool = False) -> Image.Image:
    """Open and fully decode an image; RGBA composited on white, every other mode converted to RGB.

    Takes a path (``str``/``Path``, ``file://`` ok), ``bytes``, a ``PIL.Image.Image`` or a
    ``data:image/...;base64,`` URI; ``http(s)`` URLs only with ``allow_remote``. Any failure (missing,
    corrupt, truncated, a decompression bomb) is an ``ItemError`` naming the item and the source.
    """
    what = _describe(obj)

    def bad(reason: str) -> ItemError:
        return ItemError.for_item(index, item_id, f"image {what}: {reason}")

    try:
        with warnings.catch_warnings():
            # Pillow warns (DecompressionBombWarning) between 1x and 2x MAX_IMAGE_PIXELS: treat as an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(obj, Image.Image):
                obj.load()
                return to_rgb(obj)
            if isinstance(obj, (bytes, bytearray)):
                img = Image.open(io.BytesIO(bytes(obj)))
            elif isinstance(obj, (str, Path)):
                s = str(obj)
                if s.startswith("data:"):
                    if not s.startswith("data:image") or "base64," not in s:
                        raise bad("only data:image/...;base64, URIs are supported")
                    try:
                        data = base64.b64decode(s.split("base64,", 1)[1], validate=False)
                    except ValueError as e:
                        raise bad(f"invalid base64 data ({e})") from e
                    img = Image.open(io.BytesIO(data))
                else:
                    path = local_path(s, index=index, item_id=item_id, allow_remote=allow_remote, kind="image")
                    if path.startswith(("http://", "https://")):
                        img = Image.open(io.BytesIO(_fetch_remote(path)))
                    else:
                        if not Path(path).is_file():
                            raise bad("no such file")
                        img = Image.open(path)
            else:
                raise bad(f"unsupported image type {type(obj).__name__}; pass a path, bytes, a PIL image or a "
                          "data URI")
            img.load()
            return to_rgb(img)
    except ItemError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise bad(f"too large to decode safely ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:  # Pillow raises these for corrupt/truncated files
        raise bad(f"cannot decode ({type(e).__name__}: {e})") from e


def fetch_image(obj: Any, *, factor: int, min_pixels: int, max_pixels: int, index: int | None = None,
                item_id: Any = None, allow_remote: bool = False) -> Image.Image:
    """Load an image and resize it as qwen-vl-utils ``fetch_image`` does (Pillow's default bicubic)."""
    image = load_image(obj, index=index, item_id=item_id, allow_remote=allow_remote)
    width, height = image.size
    try:
        h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    except ValueError as e:
        raise ItemError.for_item(index, item_id, f"image {_describe(obj)}: {e}") from e
    return image.resize((w, h))


# -- PDF pages ------------------------------------------------------------------------------------------
def pdf_page_items(path: str | Path, *, scale: float = 2.0, password: str | None = None,
                   pages: list[int] | None = None) -> list[Any]:
    """One ``Item`` per PDF page: the page rendered as an image (pypdfium2), its text layer in metadata.

    ``pages`` are 1-based page numbers (default: all). Ids are ``{path}#page={n}``. An encrypted PDF
    without the right password, or a corrupt one, is an ``ItemError`` naming the path and the reason.
    """
    import pypdfium2 as pdfium

    from omniret.types import Item

    p = str(path)
    if not Path(p).is_file():
        raise ItemError.for_item(None, p, f"PDF {p}: no such file")
    try:
        doc = pdfium.PdfDocument(p, password=password)
    except pdfium.PdfiumError as e:
        msg = str(e)
        reason = ("encrypted; pass the password" if "password" in msg.lower() else f"cannot open ({msg})")
        raise ItemError.for_item(None, p, f"PDF {p}: {reason}") from e
    try:
        n = len(doc)
        wanted = pages if pages is not None else list(range(1, n + 1))
        items = []
        for page_no in wanted:
            if not 1 <= page_no <= n:
                raise ItemError.for_item(None, p, f"PDF {p}: page {page_no} out of range 1..{n}")
            page = doc[page_no - 1]
            try:
                # pypdfium2 annotates scale as int, but it takes any float (it is the points-to-pixels factor)
                render: Any = page.render
                image = render(scale=scale).to_pil()
                textpage = page.get_textpage()
                try:
                    text = textpage.get_text_range()
                finally:
                    textpage.close()
            except pdfium.PdfiumError as e:
                raise ItemError.for_item(None, f"{p}#page={page_no}", f"PDF {p}: page {page_no}: {e}") from e
            finally:
                page.close()
            items.append(Item(image=to_rgb(image), id=f"{p}#page={page_no}",
                              metadata={"source": p, "page": page_no, "text": text, "num_pages": n}))
        return items
    finally:
        doc.close()


# -- video ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, as the decoder reports it."""

    num_frames: int
    fps: float
    duration: float
    width: int
    height: int


def _decord_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("decord") is not None


def _torchcodec_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchcodec") is not None


def _check_video_path(path: Any, *, index: int | None, item_id: Any, allow_remote: bool) -> str:
    p = local_path(path, index=index, item_id=item_id, allow_remote=allow_remote, kind="video")
    if not p.startswith(("http://", "https://")) and not Path(p).is_file():
        raise ItemError.for_item(index, item_id, f"video {_describe(path)}: no such file")
    return p


class _Reader:
    """A random-access frame reader over one of the available backends."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.backend = ""
        errors: list[str] = []
        if _decord_available():
            try:
                import decord

                self._vr = decord.VideoReader(path, num_threads=1)
                self.num_frames = len(self._vr)
                self.fps = float(self._vr.get_avg_fps())
                h, w = self._vr[0].shape[:2] if self.num_frames else (0, 0)
                self.height, self.width = int(h), int(w)
                self.backend = "decord"
                return
            except Exception as e:  # noqa: BLE001 - decord raises its own DECORDError and RuntimeErrors
                errors.append(f"decord: {e}")
        if _torchcodec_available():
            try:
                import importlib

                # optional, and absent where decord is installed: import it by name
                self._dec = importlib.import_module("torchcodec.decoders").VideoDecoder(path)
                md = self._dec.metadata
                self.num_frames = int(md.num_frames)
                self.fps = float(md.average_fps)
                self.height, self.width = int(md.height), int(md.width)
                self.backend = "torchcodec"
                return
            except Exception as e:  # noqa: BLE001
                errors.append(f"torchcodec: {e}")
        try:
            self._open_av()
            self.backend = "av"
        except Exception as e:  # noqa: BLE001
            errors.append(f"av: {e}")
            raise ValueError("cannot decode (" + "; ".join(str(x).splitlines()[0][:200] for x in errors) + ")") from e

    def _open_av(self) -> None:
        import av

        with av.open(self.path) as c:
            stream = c.streams.video[0]
            self.fps = float(stream.average_rate or stream.guessed_rate or 0)
            self.width, self.height = int(stream.codec_context.width), int(stream.codec_context.height)
            n = 0
            for frame in c.decode(stream):
                n += 1
                del frame
            self.num_frames = n

    def get(self, indices: list[int]) -> np.ndarray:
        """Frames at ``indices`` as uint8 ``(T, H, W, 3)`` RGB."""
        if self.backend == "decord":
            return self._vr.get_batch(indices).asnumpy()
        if self.backend == "torchcodec":
            return self._dec.get_frames_at(indices=indices).data.permute(0, 2, 3, 1).numpy()
        import av

        wanted = set(indices)
        got: dict[int, np.ndarray] = {}
        with av.open(self.path) as c:
            for i, frame in enumerate(c.decode(c.streams.video[0])):
                if i in wanted:
                    got[i] = frame.to_ndarray(format="rgb24")
                if i >= max(indices):
                    break
        missing = [i for i in indices if i not in got]
        if missing:
            raise ValueError(f"frames {missing[:5]} could not be decoded")
        return np.stack([got[i] for i in indices])


def probe_video(path: str | Path, *, index: int | None = None, item_id: Any = None) -> VideoInfo:
    """Frame count, fps, duration and size of a video file; ``ItemError`` when it cannot be read."""
    p = _check_video_path(path, index=index, item_id=item_id, allow_remote=False)
    try:
        r = _Reader(p)
    except ValueError as e:
        raise ItemError.for_item(index, item_id, f"video {_describe(path)}: {e}") from e
    duration = r.num_frames / r.fps if r.fps else 0.0
    return VideoInfo(num_frames=r.num_frames, fps=r.fps, duration=duration, width=r.width, height=r.height)


def smart_nframes(total_frames: int, video_fps: float, *, fps: float, max_frames: int,
                  min_frames: int = FPS_MIN_FRAMES) -> int:
    """How many frames to sample (qwen-vl-utils ``smart_nframes`` with ``fps``): even, in [4, max_frames]."""
    min_f = ceil_by_factor(min_frames, FRAME_FACTOR)
    max_f = floor_by_factor(min(max_frames, total_frames), FRAME_FACTOR)
    n = total_frames / video_fps * fps
    n = min(min(max(n, min_f), max_f), total_frames)
    n = floor_by_factor(n, FRAME_FACTOR)
    if not FRAME_FACTOR <= n <= total_frames:
        raise ValueError(f"video has {total_frames} frame(s); at least {FRAME_FACTOR} are needed")
    return n


def frame_range(total_frames: int, video_fps: float, video_start: float | None,
                video_end: float | None) -> tuple[int, int, int]:
    """``(start, end, count)`` frame indices of a time span (qwen-vl-utils ``calculate_video_frame_range``)."""
    if video_fps <= 0:
        raise ValueError("video has no frame rate")
    if total_frames <= 0:
        raise ValueError("video has no frames")
    if video_start is None and video_end is None:
        return 0, total_frames - 1, total_frames
    max_duration = total_frames / video_fps
    start = math.ceil(max(0.0, min(video_start, max_duration)) * video_fps) if video_start is not None else 0
    if video_end is not None:
        end = min(math.floor(max(0.0, min(video_end, max_duration)) * video_fps), total_frames - 1)
    else:
        end = total_frames - 1
    if start >= end:
        raise ValueError(f"empty time span video_start={video_start}, video_end={video_end} "
                         f"(video is {max_duration:.2f}s, {total_frames} frames at {video_fps:g} fps)")
    return start, end, end - start + 1


@dataclass
class VideoFrames:
    """Sampled frames of one video: uint8 ``(T, H, W, 3)``, the source frame indices and native fps."""

    frames: np.ndarray
    indices: list[int]
    fps: float


def read_video(path: Any, *, fps: float, max_frames: int, video_start: float | None = None,
               video_end: float | None = None, index: int | None = None, item_id: Any = None,
               allow_remote: bool = False) -> VideoFrames:
    """Sample a video file's frames as qwen-vl-utils' decord reader does.

    ``n = smart_nframes(...)`` frames at ``linspace(start, end, n).round()`` (half to even, as torch);
    ``ItemError`` for a missing, unreadable or truncated file.
    """
    import torch

    p = _check_video_path(path, index=index, item_id=item_id, allow_remote=allow_remote)
    try:
        reader = _Reader(p)
        start, end, total = frame_range(reader.num_frames, reader.fps, video_start, video_end)
        n = smart_nframes(total, reader.fps, fps=fps, max_frames=max_frames)
        idx = torch.linspace(start, end, n).round().long().tolist()
        frames = reader.get(idx)
    except ItemError:
        raise
    except Exception as e:  # noqa: BLE001 - decoders raise many types for a broken file
        raise ItemError.for_item(index, item_id, f"video {_describe(path)}: {str(e).splitlines()[0][:300]}") from e
    if frames.ndim != 4 or frames.shape[0] != len(idx) or frames.shape[-1] != 3:
        raise ItemError.for_item(index, item_id, f"video {_describe(path)}: decoder returned frames of shape "
                                                 f"{tuple(frames.shape)}")
    return VideoFrames(frames=np.ascontiguousarray(frames), indices=idx, fps=reader.fps)


def sample_frame_list(frames: list[Any], max_frames: int | None) -> list[Any]:
    """At most ``max_frames`` of a frame list, ``np.linspace(..., dtype=int)`` (floored), as the reference."""
    if max_frames is None or len(frames) <= max_frames:
        return list(frames)
    ids = np.linspace(0, len(frames) - 1, max_frames, dtype=int).tolist()
    return [frames[i] for i in ids]


def clip_max_pixels(nframes: int, *, total_pixels: float, factor: int = 32) -> tuple[int, float]:
    """``(min_pixels, max_pixels)`` per frame of a clip (qwen-vl-utils ``fetch_video``)."""
    min_pixels = VIDEO_MIN_TOKEN_NUM * factor * factor
    max_pixels = max(min(VIDEO_MAX_TOKEN_NUM * factor * factor, total_pixels / nframes * FRAME_FACTOR),
                     int(min_pixels * 1.05))
    return min_pixels, max_pixels


def resize_clip(frames: Any, height: int, width: int) -> Any:
    """Resize a uint8 ``(T, C, H, W)`` clip as torchvision's bicubic antialiased resize on uint8 does.

    torchvision interpolates in float32, clamps to [0, 255] and rounds back to uint8; the reference then
    calls ``.float()``, so the result is float32 holding integers.
    """
    import torch

    x = torch.as_tensor(frames)
    if x.shape[-2:] == (height, width):
        return x.float()
    out = torch.nn.functional.interpolate(x.float(), size=(height, width), mode="bicubic", align_corners=False,
                                          antialias=True)
    return out.clamp(0, 255).round()
