"""The ingested study: de-identified, display-ready pixels plus safe metadata.

Kept apart from tools/imaging.py (which decodes files) so every tool can depend on the type
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


def pixel_hash(pixels: np.ndarray) -> str:
    """Content id: sha256 of the display pixels (shape + float32 bytes)."""
    arr = np.ascontiguousarray(pixels, dtype=np.float32)
    h = hashlib.sha256()
    h.update(f"{arr.shape[0]}x{arr.shape[1]}:".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class Study:
    """A de-identified chest radiograph.

    pixels: float32, 2-D (H, W), finite, in [0, 1], bright = dense (bone bright), at the
    ORIGINAL resolution, so a Box in [0, 1] maps to original pixels by multiplying by
    (width, height). metadata holds only non-identifying facts (modality, view, body part,
    pixel spacing, bits, photometric interpretation, age bucket).
    """

    id: str
    pixels: np.ndarray
    original_size: tuple[int, int]  # (width, height)
    view: View = "unknown"
    source_format: SourceFormat = "array"
    metadata: dict[str, Any] = field(default_factory=dict)

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
        h, w = arr.shape
        return cls(
            id=pixel_hash(arr),
            pixels=arr,
            original_size=(w, h),
            view=view,
            source_format=source_format,
            metadata=dict(metadata or {}),
        )
