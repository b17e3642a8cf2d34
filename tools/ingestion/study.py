"""The ingested study: de-identified, display-ready pixels plus safe metadata.

Kept apart from tools/ingestion/loader.py (which decodes files) so every tool can depend on the type
without pulling in the decoders.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

View = Literal["PA", "AP", "LATERAL", "unknown"]
SourceFormat = Literal["png", "jpeg", "dicom", "array"]


class StudyError(ValueError):
    """Base of every refusal to ingest a file; the message is meant for a clinician."""


class UnsupportedFormat(StudyError):
    """Not PNG, JPEG or DICOM, or the extension does not match the content."""


class CorruptFile(StudyError):
    """Empty, truncated or undecodable."""


class NotAChestRadiograph(StudyError):
    """A DICOM that is not a projection radiograph (CT, MR, SR, ...)."""


class ImageTooLarge(StudyError):
    """Larger than we will decode (also guards against decompression bombs)."""


class ImageTooSmall(StudyError):
    """Too small to read a chest radiograph from."""


class BurnedInText(StudyError):
    """Pixels carry burned-in text (e.g. a name or MRN) and redaction is off, or could not be done."""


class IngestBusy(StudyError):
    """Too many images are being decoded at once; try again in a moment."""


# Size limits every decoder checks from the header, BEFORE decoding pixels.
MIN_SIDE = 64  # px: below this nothing can be read from a chest radiograph
MAX_SIDE = 12_000  # px: larger than any detector (43 cm at 0.035 mm)
MAX_PIXELS = 40_000_000  # default of Settings.max_image_pixels: a 43 cm detector at 0.07 mm is ~37 MP
QUANT_LEVELS = 65535  # pixels are quantised to uint16 at ingest (finer than any 12-16 bit detector)


def check_size(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse sizes outside [MIN_SIDE, MAX_SIDE] per side or above max_pixels in total."""
    if width > MAX_SIDE or height > MAX_SIDE or width * height > max_pixels:
        raise ImageTooLarge(
            f"The image is {width} x {height} pixels, larger than the {MAX_SIDE:,} pixels per side "
            f"(or {max_pixels / 1_000_000:g} megapixels, setting CXR_AGENT_MAX_IMAGE_PIXELS) this tool "
            "decodes; export it at a lower resolution."
        )
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageTooSmall(
            f"The image is only {width} x {height} pixels; at least {MIN_SIDE} x {MIN_SIDE} is needed "
            "to read a chest radiograph. Upload the full-resolution image."
        )


def quantise(pixels: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint16 (round to nearest of QUANT_LEVELS + 1 levels): what the store keeps."""
    arr = np.asarray(pixels)
    if arr.dtype == np.uint16:
        return np.ascontiguousarray(arr)
    out = np.clip(arr, 0.0, 1.0) * QUANT_LEVELS
    return np.ascontiguousarray(np.rint(out), dtype=np.uint16)


def dequantise(q: np.ndarray) -> np.ndarray:
    """uint16 -> float32 in [0, 1]; quantise(dequantise(q)) == q exactly (error < 0.01 of a level)."""
    out = q.astype(np.float32)
    out *= np.float32(1.0 / QUANT_LEVELS)
    return out


def pixel_hash(pixels: np.ndarray) -> str:
    """Content id: sha256 of what is stored (shape + the uint16 quantised pixels, little-endian).

    Float pixels are quantised first, so a Study's float32 pixels and its stored uint16 array give
    the same id."""
    q = quantise(pixels).astype("<u2", copy=False)
    h = hashlib.sha256()
    h.update(f"u16:{q.shape[0]}x{q.shape[1]}:".encode())
    h.update(memoryview(q).cast("B"))  # same bytes as q.tobytes(), without the copy
    return h.hexdigest()


def legacy_pixel_hash(pixels: np.ndarray) -> str:
    """The v0.1 content id (shape + float32 bytes), kept so studies stored by v0.1 still load."""
    arr = np.ascontiguousarray(pixels, dtype=np.float32)
    h = hashlib.sha256()
    h.update(f"{arr.shape[0]}x{arr.shape[1]}:".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class Study:
    """A de-identified chest radiograph.

    pixels: float32, 2-D (H, W), finite, in [0, 1] on the uint16 grid (k / 65535; studies stored
    by v0.1 keep their float32 values), bright = dense (bone bright), at the ORIGINAL resolution, so a Box in [0, 1] maps to original pixels by multiplying by
    (width, height). metadata holds only non-identifying facts (modality, view, body part,
    pixel spacing, bits, photometric interpretation, age bucket).
    """

    id: str
    pixels: np.ndarray = field(repr=False)  # repr stays short and never dumps image data
    original_size: tuple[int, int]  # (width, height)
    view: View = "unknown"
    source_format: SourceFormat = "array"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The id is the hash of these pixels: an in-place edit would silently break that promise.
        if isinstance(self.pixels, np.ndarray) and self.pixels.flags.writeable:
            self.pixels.flags.writeable = False

    @property
    def width(self) -> int:
        return self.original_size[0]

    @property
    def height(self) -> int:
        return self.original_size[1]

    @classmethod
    def from_array(
        cls,
        pixels: np.ndarray,
        *,
        view: View = "unknown",
        source_format: SourceFormat = "array",
        metadata: dict[str, Any] | None = None,
    ) -> Study:
        """Wrap an already display-ready array (any numeric dtype; rescaled to [0, 1] if needed)."""
        arr = np.asarray(pixels)
        if arr.ndim != 2:
            raise CorruptFile(f"expected a 2-D greyscale image, got shape {arr.shape}")
        arr = arr.astype(np.float32, copy=True)
        if not np.isfinite(arr).all():
            raise CorruptFile("image contains non-finite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        q = quantise(arr)
        arr = dequantise(q)
        h, w = arr.shape
        return cls(
            id=pixel_hash(q),
            pixels=arr,
            original_size=(w, h),
            view=view,
            source_format=source_format,
            metadata=dict(metadata or {}),
        )
