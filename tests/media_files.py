"""Media files the tests write (videos, PDFs), shared by several test modules.

A helper module rather than imports from one test module into another: plain ``pytest`` puts ``tests/`` on
``sys.path`` (no package there), so ``from media_files import ...`` works however the suite is started.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def write_video(path: Path, n: int = 12, fps: int = 6, w: int = 64, h: int = 48, seed: int = 0) -> Path:
    """An mpeg4 clip of ``n`` random frames."""
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for _ in range(n):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def picture(color: str, label: str, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A solid image with a label drawn on it."""
    im = Image.new("RGB", size, color)
    ImageDraw.Draw(im).text((6, 20), label, fill="white")
    return im


def make_pdf(path: Path) -> Path:
    """A two-page PDF (navy "invoices", green "gardens")."""
    pages = [picture("navy", "page one: invoices"), picture("darkgreen", "page two: gardens")]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    return path


def make_video(path: Path, seconds: float = 2.0, fps: int = 8) -> Path:
    """A 64x64 clip with a red bar that grows frame by frame."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(int(seconds * fps)):
            rgb = np.zeros((64, 64, 3), np.uint8)
            rgb[:, : 4 * (i + 1) % 64] = (200, 40, 40)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    return path
