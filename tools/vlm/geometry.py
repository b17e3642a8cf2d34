"""The image the VLM sees, and the map between its coordinates and the original image's.

RadVLM writes boxes as fractions (0-1) of the image it was given. We give it the Study pixels
as 8-bit RGB, downscaled (aspect kept) so the longest side is at most ``max_side`` (the anyres
processor tiles large images into up to 36 crops; beyond ~1k px that only costs compute), and
optionally padded to a square. Downscaling with the aspect ratio kept leaves fractional
coordinates unchanged; padding does not, so ``ModelView`` records the padding and undoes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from knowledge.evidence import Box

DEFAULT_MAX_SIDE = 1024
Coords = tuple[float, float, float, float]


@dataclass(frozen=True)
class ModelView:
    """How the model's input image relates to the original: content of size (content_w,
    content_h) pasted at (pad_left, pad_top) on a canvas of (canvas_w, canvas_h)."""

    original_size: tuple[int, int]  # (width, height) of the Study
    content_w: int
    content_h: int
    canvas_w: int
    canvas_h: int
    pad_left: int = 0
    pad_top: int = 0

    @property
    def padded(self) -> bool:
        return (self.canvas_w, self.canvas_h) != (self.content_w, self.content_h)

    def to_original(self, coords: Coords) -> Coords:
        """Model-normalised (x1, y1, x2, y2) -> original-normalised, clipped to the image."""
        if not self.padded:  # fractions of the content are fractions of the original: exact identity
            return tuple(min(1.0, max(0.0, v)) for v in coords)  # type: ignore[return-value]
        x1, y1, x2, y2 = coords
        fx = lambda v: (v * self.canvas_w - self.pad_left) / self.content_w  # noqa: E731
        fy = lambda v: (v * self.canvas_h - self.pad_top) / self.content_h  # noqa: E731
        out = (fx(x1), fy(y1), fx(x2), fy(y2))
        return tuple(min(1.0, max(0.0, v)) for v in out)  # type: ignore[return-value]

    def to_model(self, coords: Coords) -> Coords:
        """Original-normalised -> model-normalised (the inverse of to_original)."""
        if not self.padded:
            return coords
        x1, y1, x2, y2 = coords
        gx = lambda v: (v * self.content_w + self.pad_left) / self.canvas_w  # noqa: E731
        gy = lambda v: (v * self.content_h + self.pad_top) / self.canvas_h  # noqa: E731
        return (gx(x1), gy(y1), gx(x2), gy(y2))

    def box_to_original(self, coords: Coords, label: str | None = None) -> Box:
        x1, y1, x2, y2 = self.to_original(coords)
        return Box(x1=x1, y1=y1, x2=x2, y2=y2, label=label)


@dataclass(frozen=True)
class ModelImage:
    image: Image.Image
    view: ModelView


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Study pixels (float in [0, 1]) -> uint8 greyscale."""
    arr = np.asarray(pixels, dtype=np.float32)
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def prepare_image(pixels: np.ndarray, *, max_side: int = DEFAULT_MAX_SIDE, pad_square: bool = False) -> ModelImage:
    """The RGB image sent to the model, and its ModelView."""
    grey = Image.fromarray(to_uint8(pixels), mode="L")
    ow, oh = grey.size
    scale = min(1.0, max_side / max(ow, oh)) if max_side else 1.0
    cw, ch = max(1, round(ow * scale)), max(1, round(oh * scale))
    if (cw, ch) != (ow, oh):
        grey = grey.resize((cw, ch), Image.Resampling.BICUBIC)
    rgb = grey.convert("RGB")
    if not pad_square or cw == ch:
        return ModelImage(rgb, ModelView((ow, oh), cw, ch, cw, ch))
    side = max(cw, ch)
    left, top = (side - cw) // 2, (side - ch) // 2
    canvas = Image.new("RGB", (side, side), (0, 0, 0))
    canvas.paste(rgb, (left, top))
    return ModelImage(canvas, ModelView((ow, oh), cw, ch, side, side, left, top))
