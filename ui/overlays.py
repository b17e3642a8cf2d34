"""Draw boxes and heatmaps onto a display copy of the study.

Boxes arrive normalised to the ORIGINAL image ([0, 1] on each axis) and heatmaps as float
arrays at the original size, so both are mapped by the display size alone: the overlay stays
right whatever size the image is shown at. The study's pixels are never modified. A box's colour
says what kind of source drew it (report writer, other image source, prior), read from the graph's
tool roles that each turn record carries, never from the tools' names (``SourcePalette``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from agents.replying.roles import Role, ToolRoles
from knowledge.evidence import Box
from knowledge.vocabulary import display_name

log = logging.getLogger(__name__)

RGB = tuple[int, int, int]
UNKNOWN_SOURCE = "unknown source"  # how a box or heatmap whose reply names no source is labelled

# One small palette per role; the n-th source of a role (in the graph's tool order, built-ins
# first) takes the n-th colour, so slot 0 is the colour the built-in of that role has always had
# (the VLM's cyan, the classifier's orange, retrieval's purple) and several custom sources of one
# role stay distinct and keep their colour across reruns.
ROLE_PALETTES: dict[Role, tuple[RGB, ...]] = {
    "writer": ((0, 200, 255), (40, 110, 255), (140, 230, 255), (0, 150, 170)),
    "image": ((255, 140, 0), (255, 205, 50), (200, 80, 0), (255, 175, 110)),
    "prior": ((170, 110, 255), (225, 140, 255), (115, 70, 205), (205, 185, 255)),
}
# Sources the graph declared nothing for (a remote graph's custom tools): a stable colour from the name.
UNDECLARED_COLORS: tuple[RGB, ...] = ((255, 70, 160), (80, 255, 200), (255, 90, 90), (60, 220, 90), (200, 255, 80))
UNKNOWN_COLOR: RGB = (200, 200, 200)  # a box with no source: attributed to no tool

# Anchor points of a perceptual "inferno"-like ramp (dark -> purple -> orange -> yellow).
_RAMP = np.array(
    [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]],
    dtype=np.float32,
)


@dataclass(frozen=True)
class SourcePalette:
    """Box colours per source, from the graph's tool roles (``ToolRoles``, as a turn record carries them).

    ``colors`` maps each tool to its role's palette, indexed by its order among the tools of that role
    (registry order, wrapping round past the palette's end). A source not in it gets a stable colour
    from ``UNDECLARED_COLORS`` (hash of its name); a missing source is grey.
    """

    colors: Mapping[str, RGB] = field(default_factory=dict)

    @classmethod
    def from_roles(cls, roles: ToolRoles | None) -> SourcePalette:
        """The palette of a graph's tools; None (no turn record yet): the built-ins' roles, so the
        built-ins keep their colours and any other source is undeclared."""
        roles = roles or ToolRoles.builtin()
        colors: dict[str, RGB] = {}
        for role in get_args(Role):
            palette = ROLE_PALETTES[role]
            for i, name in enumerate(roles.of_role(role)):
                colors[name] = palette[i % len(palette)]
        return cls(colors)

    def color(self, source: str | None) -> RGB:
        """The colour a source's boxes are drawn in (stable across runs)."""
        if not source:
            return UNKNOWN_COLOR
        if source in self.colors:
            return self.colors[source]
        idx = int(hashlib.sha256(source.encode()).hexdigest(), 16) % len(UNDECLARED_COLORS)
        return UNDECLARED_COLORS[idx]


def source_color(source: str | None, roles: ToolRoles | None = None) -> RGB:
    """The colour of one source's boxes; see ``SourcePalette`` (roles None: the built-ins')."""
    return SourcePalette.from_roles(roles).color(source)


@dataclass(frozen=True)
class OverlayBox:
    """A labelled box to draw: corners normalised to the original image."""

    finding: str
    source: str
    x1: float
    y1: float
    x2: float
    y2: float
    label: str | None = None
    index: int = 1  # 2, 3, ... for further boxes of the same finding and source (e.g. bilateral)

    @property
    def source_label(self) -> str:
        return self.source or UNKNOWN_SOURCE

    @property
    def base_key(self) -> str:
        return f"{display_name(self.finding) if self.finding else 'region'} ({self.source_label})"

    @property
    def key(self) -> str:
        return self.base_key if self.index == 1 else f"{self.base_key} #{self.index}"

    @property
    def caption(self) -> str:
        name = display_name(self.finding) if self.finding else (self.label or "region")
        return f"{name} [{self.source_label}]"

    @classmethod
    def from_any(cls, item: Mapping[str, Any] | Any) -> OverlayBox | None:
        """Accept the reply's box dicts ({finding, source, x1..y2, label}); None when unusable."""
        try:
            get = item.get if isinstance(item, Mapping) else lambda k, d=None: getattr(item, k, d)
            box = Box(x1=float(get("x1")), y1=float(get("y1")), x2=float(get("x2")), y2=float(get("y2")))
        except (TypeError, ValueError):
            log.warning("skipping a malformed overlay box")
            return None
        return cls(
            finding=str(get("finding") or ""),
            source=str(get("source") or ""),  # none given: shown as unknown, attributed to no tool
            x1=box.x1,
            y1=box.y1,
            x2=box.x2,
            y2=box.y2,
            label=get("label"),
        )


@dataclass(frozen=True)
class OverlayHeatmap:
    """A per-finding heatmap stored as a float .npy at the original image size."""

    finding: str
    uri: str
    source: str = ""  # the tool that made it; "" when the reply does not say (shown as unknown)

    @property
    def key(self) -> str:
        return f"{display_name(self.finding) if self.finding else 'heatmap'} ({self.source or UNKNOWN_SOURCE})"

    @classmethod
    def from_any(cls, item: Mapping[str, Any] | Any) -> OverlayHeatmap | None:
        get = item.get if isinstance(item, Mapping) else lambda k, d=None: getattr(item, k, d)
        uri = get("uri")
        if not uri:
            return None
        return cls(finding=str(get("finding") or ""), uri=str(uri), source=str(get("source") or ""))


def display_size(original: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(width, height) scaled so the longer side is at most max_side, aspect ratio kept."""
    w, h = original
    scale = min(1.0, max_side / max(w, h)) if max(w, h) > 0 else 1.0
    return max(1, round(w * scale)), max(1, round(h * scale))


def to_display_image(pixels: np.ndarray, size: tuple[int, int] | None = None) -> Image.Image:
    """A greyscale [0, 1] study as an RGB PIL image, resized to `size` (width, height) if given."""
    arr = np.nan_to_num(np.asarray(pixels, dtype=np.float32), nan=0.0)
    arr = np.clip(arr, 0.0, 1.0)
    img = Image.fromarray((arr * 255.0 + 0.5).astype(np.uint8), mode="L").convert("RGB")
    if size is not None and size != img.size:
        img = img.resize(size, Image.Resampling.LANCZOS)
    return img


def box_to_display(box: OverlayBox | Box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Normalised corners -> display pixel corners (x1, y1, x2, y2) for a display of `size`."""
    w, h = size
    x1, y1 = round(box.x1 * w), round(box.y1 * h)
    x2, y2 = round(box.x2 * w), round(box.y2 * h)
    # Keep the outline inside the canvas (a box touching the right edge would draw at x = w).
    return (min(x1, w - 1), min(y1, h - 1), min(max(x2, x1), w - 1), min(max(y2, y1), h - 1))


def colorize(heat: np.ndarray) -> np.ndarray:
    """Map a [0, 1] array to RGB uint8 through the ramp."""
    t = np.clip(np.nan_to_num(heat.astype(np.float32)), 0.0, 1.0) * (len(_RAMP) - 1)
    lo = np.floor(t).astype(int)
    hi = np.minimum(lo + 1, len(_RAMP) - 1)
    frac = (t - lo)[..., None]
    rgb = _RAMP[lo] * (1.0 - frac) + _RAMP[hi] * frac
    return rgb.astype(np.uint8)


def normalise_heatmap(heat: np.ndarray) -> np.ndarray:
    """Scale a heatmap to [0, 1] (min-max; a flat map becomes zeros)."""
    arr = np.nan_to_num(np.asarray(heat, dtype=np.float32))
    if arr.ndim == 3:  # (1, H, W) or (H, W, 1)
        arr = arr.squeeze()
    if arr.ndim != 2:
        raise ValueError(f"heatmap must be 2-D, got shape {arr.shape}")
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def blend_heatmap(img: Image.Image, heat: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """Alpha-blend a heatmap (any size; resized to the image) onto an RGB image.

    The blend weight follows the heat itself, so cold regions leave the radiograph readable.
    """
    norm = normalise_heatmap(heat)
    heat_img = Image.fromarray((norm * 255.0 + 0.5).astype(np.uint8), mode="L").resize(img.size, Image.Resampling.BILINEAR)
    h = np.asarray(heat_img, dtype=np.float32) / 255.0
    base = np.asarray(img.convert("RGB"), dtype=np.float32)
    colour = colorize(h).astype(np.float32)
    weight = (alpha * h)[..., None]
    out = base * (1.0 - weight) + colour * weight
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), mode="RGB")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def label_origin(text_size: tuple[int, int], wanted: tuple[int, int], image_size: tuple[int, int],
                 pad: int = 3) -> tuple[int, int]:
    """Where a box's label goes: at the box's top-left corner, moved left or up just enough that the
    whole label (and its backing) stays on the image: a box at the right or bottom edge keeps a
    readable label instead of one cut off at the edge."""
    (tw, th), (x, y), (w, h) = text_size, wanted, image_size
    return max(pad, min(x, w - tw - pad)), max(pad, min(y, h - th - pad))


def draw_boxes(
    img: Image.Image, boxes: Iterable[OverlayBox], *, width: int | None = None, palette: SourcePalette | None = None,
) -> Image.Image:
    """Draw labelled boxes (colour per source, from ``palette``; None: the built-ins') on a copy of the image."""
    palette = palette or SourcePalette.from_roles(None)
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    line = width or max(2, round(min(out.size) / 200))
    font = _font(max(11, round(min(out.size) / 40)))
    for b in boxes:
        x1, y1, x2, y2 = box_to_display(b, out.size)
        colour = palette.color(b.source)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
        text = b.caption
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tx, ty = label_origin((right - left, bottom - top), (x1 + line, y1 + line), out.size)
        bbox = draw.textbbox((tx, ty), text, font=font)
        draw.rectangle((bbox[0] - 2, bbox[1] - 1, bbox[2] + 2, bbox[3] + 1), fill=(0, 0, 0))
        draw.text((tx, ty), text, fill=colour, font=font)
    return out


def load_heatmap(uri: str) -> np.ndarray | None:
    """Read a stored heatmap; None (and a log line) when it is missing or unreadable."""
    try:
        arr = np.load(Path(uri), allow_pickle=False)
        normalise_heatmap(arr)  # validate shape
        return arr
    except (OSError, ValueError) as exc:
        log.warning("cannot read heatmap %s: %s", Path(uri).name, exc)
        return None


def compose(
    pixels: np.ndarray,
    *,
    boxes: Sequence[OverlayBox] = (),
    heatmaps: Sequence[np.ndarray] = (),
    max_side: int = 900,
    alpha: float = 0.45,
    palette: SourcePalette | None = None,
) -> Image.Image:
    """The display image: study scaled to `max_side`, heatmaps blended, then boxes on top."""
    h, w = np.asarray(pixels).shape[:2]
    img = to_display_image(pixels, display_size((w, h), max_side))
    for heat in heatmaps:
        img = blend_heatmap(img, heat, alpha=alpha)
    if boxes:
        img = draw_boxes(img, boxes, palette=palette)
    return img
