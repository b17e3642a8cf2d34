"""Ingestion: any uploaded PNG, JPEG or DICOM -> a de-identified, display-ready Study.

``load_study`` is the only way a file enters the system. It sniffs the format from the
content (magic bytes), refuses an extension that contradicts the content, checks the size
from the header before decoding anything, decodes (Pillow / pydicom via tools.dicom_io),
checks the image polarity, and returns a Study whose pixels are float32 (H, W) in [0, 1],
bone bright, at the original resolution. Every refusal is a StudyError subclass with a
message for a clinician; no other exception escapes.

Polarity: the header is trusted first (MONOCHROME1 is inverted). Then, for frontal or
unknown views, a chest-specific check compares the mediastinum column with the lung fields
(bright spine/heart vs dark lungs on a correct image). A clearly negative result (score below
POLARITY_INVERTED_BELOW; every real image we tested scores above +0.3, raw negatives below
-1.8) is corrected and flagged in ``metadata["polarity_warning"]``; a weakly negative one is
only flagged. This catches the real-world defect of a MONOCHROME1 header over pixels that
were already inverted.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from tools.study import (
    MAX_PIXELS,
    MAX_SIDE,
    MIN_SIDE,
    CorruptFile,
    ImageTooLarge,
    ImageTooSmall,
    NotAChestRadiograph,
    SourceFormat,
    Study,
    StudyError,
    UnsupportedFormat,
    View,
    check_size,
    pixel_hash,
)

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "MAX_SIDE",
    "MIN_SIDE",
    "CorruptFile",
    "ImageTooLarge",
    "ImageTooSmall",
    "NotAChestRadiograph",
    "Study",
    "StudyError",
    "UnsupportedFormat",
    "load_study",
    "pixel_hash",
    "polarity_score",
    "sniff_format",
]

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 512 * 1024 * 1024  # a chest DICOM is 1-60 MB; refuse before reading more
POLARITY_INVERTED_BELOW = -0.75  # corrected (flipped) and flagged
POLARITY_DOUBTFUL_BELOW = 0.0  # flagged only

_FORMAT_NAMES = {
    "png": "PNG",
    "jpeg": "JPEG",
    "dicom": "DICOM",
    "tiff": "TIFF",
    "gif": "GIF",
    "bmp": "BMP",
    "webp": "WebP",
    "jpeg2000": "JPEG 2000 (bare, not inside DICOM)",
    "pdf": "PDF",
    "zip": "ZIP archive",
    "gzip": "gzip archive",
    "nifti": "NIfTI",
    "text": "text",
}
_EXTENSIONS = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".jpe": "jpeg",
    ".jfif": "jpeg",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".dic": "dicom",
    ".ima": "dicom",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".gif": "gif",
    ".bmp": "bmp",
    ".webp": "webp",
    ".jp2": "jpeg2000",
    ".j2k": "jpeg2000",
    ".pdf": "pdf",
    ".zip": "zip",
    ".gz": "gzip",
    ".nii": "nifti",
    ".txt": "text",
    ".csv": "text",
    ".json": "text",
}
_SUPPORTED = ("png", "jpeg", "dicom")


# ---- format sniffing ---------------------------------------------------------------------------
def sniff_format(data: bytes) -> str | None:
    """The format named by the content's magic bytes (see _FORMAT_NAMES), or None if unknown."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM") and len(data) > 26:
        return "bmp"
    if head.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")):
        return "jpeg2000"
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if len(data) >= 348 and data[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "nifti"
    if _looks_like_legacy_dicom(data):
        return "dicom"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in data[:512]):
        return "text"
    return None


def _looks_like_legacy_dicom(data: bytes) -> bool:
    """A DICOM stream with no preamble/file meta starts with a group 0x0002 or 0x0008 tag."""
    if len(data) < 8:
        return False
    group = int.from_bytes(data[0:2], "little")
    element = int.from_bytes(data[2:4], "little")
    return group in (0x0002, 0x0008) and element < 0x2000


def _check_extension(filename: str | None, content: str | None) -> None:
    if not filename:
        return
    suffix = Path(filename).suffix.lower()
    claimed = _EXTENSIONS.get(suffix)
    if claimed is None or claimed == content:  # no/unknown extension (e.g. UID-named DICOM): content decides
        return
    said = _FORMAT_NAMES[claimed]
    if content is None:
        raise UnsupportedFormat(
            f"The file's extension '{suffix}' says {said}, but its content is not a PNG, JPEG or DICOM "
            "image (it may be damaged or in another format)."
        )
    fix = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}.get(content)
    raise UnsupportedFormat(
        f"The file's extension '{suffix}' says {said}, but its content is {_FORMAT_NAMES[content]}. "
        + (f"Rename it to {fix} if that is right, or export it again, and upload it again." if fix else
           "Export the image as PNG, JPEG or DICOM and upload it again.")
    )


# ---- reading the source ------------------------------------------------------------------------
def _read_source(source: Any, filename: str | None) -> tuple[bytes, str | None]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        filename = filename or path.name
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise ImageTooLarge(
                    f"The file is {size / 2**20:.0f} MB; files above {MAX_FILE_BYTES // 2**20} MB are not read."
                )
            data = path.read_bytes()
        except StudyError:
            raise
        except (OSError, ValueError):  # message never quotes the path (it may carry a name)
            raise CorruptFile("The file could not be opened: it does not exist or is not readable.") from None
    elif hasattr(source, "read"):  # file-like (e.g. Streamlit's UploadedFile)
        try:
            data = source.read()
        except Exception:
            raise CorruptFile("The uploaded file could not be read.") from None
        if not isinstance(data, (bytes, bytearray)):
            raise UnsupportedFormat("The upload must be opened in binary mode.")
        data = bytes(data)
        name = getattr(source, "name", None)
        filename = filename or (name if isinstance(name, str) else None)
    else:
        raise UnsupportedFormat(f"Expected a file path or the file's bytes, got {type(source).__name__}.")
    if len(data) > MAX_FILE_BYTES:
        raise ImageTooLarge(f"The file is larger than {MAX_FILE_BYTES // 2**20} MB.")
    return data, filename


# ---- PNG / JPEG ----------------------------------------------------------------------------------
def _raster_to_grey(im: Any, meta: dict[str, Any]) -> np.ndarray:
    """Any Pillow mode -> float64 (H, W) in [0, 1]. Alpha is composited onto black (air is dark)."""
    mode = im.mode
    meta["mode"] = mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("La", "RGBa"):
        im = im.convert("LA" if mode == "La" else "RGBA")
    mode = im.mode
    arr = np.asarray(im)
    if mode in ("L", "LA", "RGB", "RGBA"):
        meta["bit_depth"] = 8
        alpha = None
        if mode in ("LA", "RGBA"):
            alpha = arr[..., -1].astype(np.float64) / 255.0
            arr = arr[..., :-1]
        if arr.ndim == 3 and arr.shape[-1] == 3:
            grey = (arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114) / 255.0
        else:
            grey = arr.reshape(arr.shape[0], arr.shape[1]) / 255.0  # one pass, float64
        if alpha is not None and float(alpha.min()) < 1.0:
            grey = grey * alpha
            meta["alpha"] = "composited on black"
        return grey
    # 16-bit, 32-bit integer or float greyscale: raw values, no display window: stretch min-max.
    meta["bit_depth"] = 16 if mode.startswith("I;16") else 32
    grey = arr.astype(np.float64)
    if grey.ndim != 2:
        raise UnsupportedFormat(f"Images in Pillow mode {mode} are not supported; export as 8-bit PNG.")
    if not np.isfinite(grey).all():
        raise CorruptFile("The image contains invalid (non-finite) values.")
    lo, hi = float(grey.min()), float(grey.max())
    return (grey - lo) / (hi - lo) if hi > lo else np.zeros_like(grey)


def _decode_raster(data: bytes, fmt: str) -> tuple[np.ndarray, dict[str, Any]]:
    from PIL import Image, ImageOps

    formats = ["PNG"] if fmt == "png" else ["JPEG", "MPO"]
    name = _FORMAT_NAMES[fmt]
    try:
        with warnings.catch_warnings():  # our own check_size (tighter) follows; Pillow's hard limit stays on
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=formats)  # reads the header only
    except Image.DecompressionBombError:
        raise ImageTooLarge(
            f"The {name} header declares an image too large to decode safely (decompression-bomb guard)."
        ) from None
    except Exception:
        raise CorruptFile(f"The {name} file could not be read: its header is damaged or truncated.") from None
    width, height = im.size
    check_size(width, height)  # from the header, before decoding any pixel
    meta: dict[str, Any] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
            im = ImageOps.exif_transpose(im) or im
            grey = _raster_to_grey(im, meta)
    except StudyError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"The {name} image is too large to decode safely (decompression-bomb guard).") from None
    except MemoryError:
        raise ImageTooLarge(f"The {name} image is too large to decode in memory.") from None
    except Exception:
        raise CorruptFile(f"The {name} image data could not be decoded: the file is truncated or damaged.") from None
    return grey, meta


# ---- polarity --------------------------------------------------------------------------------------
def polarity_score(pixels: np.ndarray) -> float:
    """How bone-bright a frontal chest image looks: (mediastinum - lung fields) / spread.

    Median of the central column band (x 45-55 %) minus the median of both lung bands
    (x 15-35 % and 65-85 %), over rows 25-70 %, divided by that row band's standard deviation.
    Positive on a correct frontal radiograph (spine and heart bright, lungs dark), negative on a
    negative image. Not meaningful for lateral views.
    """
    a = np.asarray(pixels)
    step = max(1, min(a.shape) // 512)  # statistics of medians and spread: a 512-px grid is plenty
    a = a[::step, ::step].astype(np.float64)
    h, w = a.shape
    rows = a[int(0.25 * h) : max(int(0.70 * h), int(0.25 * h) + 1)]
    centre = rows[:, int(0.45 * w) : max(int(0.55 * w), int(0.45 * w) + 1)]
    lungs = np.concatenate(
        [rows[:, int(0.15 * w) : int(0.35 * w)].ravel(), rows[:, int(0.65 * w) : int(0.85 * w)].ravel()]
    )
    spread = float(rows.std())
    if spread < 1e-6 or lungs.size == 0:
        return 0.0
    return float((np.median(centre) - np.median(lungs)) / spread)


def _check_polarity(pixels: np.ndarray, view: View, meta: dict[str, Any]) -> np.ndarray:
    if view == "LATERAL":
        return pixels
    score = polarity_score(pixels)
    meta["polarity_score"] = round(score, 2)
    if score < POLARITY_INVERTED_BELOW:
        if meta.get("photometric_interpretation") == "MONOCHROME1":
            why = (
                "The DICOM header says MONOCHROME1 (inverted greyscale) but its pixels were already stored "
                "with bone bright, a known header defect; the image is shown with bone bright."
            )
        else:
            why = "The image looked like a negative (bone dark, lungs bright); it was inverted to show bone bright."
        meta["polarity_corrected"] = True
        meta["polarity_warning"] = why + " Check that the displayed image looks right."
        return 1.0 - pixels
    if score < POLARITY_DOUBTFUL_BELOW:
        meta["polarity_warning"] = (
            "Could not confirm that bone is bright in this image (unusual brightness pattern); "
            "check that it is not a negative or a non-frontal view."
        )
    return pixels


# ---- entry point -----------------------------------------------------------------------------------
def load_study(source: str | Path | bytes, *, filename: str | None = None) -> Study:
    """Decode a PNG, JPEG or DICOM (path, bytes or binary file object) into a de-identified Study.

    filename (optional) is used only to check that its extension matches the content; it is never
    stored or logged. Raises a StudyError subclass (UnsupportedFormat, CorruptFile,
    NotAChestRadiograph, ImageTooLarge, ImageTooSmall) and nothing else.
    """
    try:
        study = _load(source, filename)
    except StudyError as exc:
        log.info("study refused: %s: %s", type(exc).__name__, exc)
        raise
    except MemoryError:
        log.info("study refused: out of memory while decoding")
        raise ImageTooLarge("The image is too large to decode in memory.") from None
    except Exception as exc:  # last line of defence: a decoder bug must not crash the app
        log.warning("study refused: unexpected %s while decoding", type(exc).__name__)
        raise CorruptFile("The file could not be decoded: it is damaged or in an unsupported variant.") from None
    log.info(
        "study ingested: id=%s format=%s size=%dx%d view=%s",
        study.id[:12], study.source_format, study.width, study.height, study.view,
    )  # fmt: skip
    return study


def _load(source: Any, filename: str | None) -> Study:
    data, filename = _read_source(source, filename)
    if not data:
        raise CorruptFile("The file is empty (0 bytes). Upload it again.")
    fmt = sniff_format(data)
    _check_extension(filename, fmt)
    if fmt not in _SUPPORTED:
        if fmt is None:
            raise UnsupportedFormat(
                "The file is not a PNG, JPEG or DICOM image (its content is not recognised). "
                "Upload a chest X-ray in one of those formats."
            )
        raise UnsupportedFormat(
            f"This is a {_FORMAT_NAMES[fmt]} file; cxr-agent reads PNG, JPEG and DICOM. "
            "Convert the image to one of those and upload it again."
        )
    view: View = "unknown"
    source_format: SourceFormat
    if fmt == "dicom":
        from tools.dicom_io import decode_dicom

        decoded = decode_dicom(data)
        pixels, view, meta = decoded.pixels, decoded.view, decoded.metadata
        source_format = "dicom"
    else:
        pixels, meta = _decode_raster(data, fmt)
        source_format = "png" if fmt == "png" else "jpeg"
    if pixels.ndim != 2:
        raise CorruptFile(f"Expected a 2-D greyscale image, got shape {pixels.shape}.")
    # Both decoders return finite float64 in [0, 1]; re-check cheaply rather than trust.
    lo, hi = float(pixels.min()), float(pixels.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise CorruptFile("The image contains invalid (non-finite) values.")
    if hi - lo < 1e-6:
        raise CorruptFile("The image is blank (every pixel has the same value); nothing can be read from it.")
    if lo < 0.0 or hi > 1.0:
        pixels = np.clip(pixels, 0.0, 1.0)
    # float64 until here so a polarity correction undoes an inversion exactly (same image, same id).
    pixels = _check_polarity(pixels, view, meta)
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    height, width = pixels.shape
    return Study(
        id=pixel_hash(pixels),
        pixels=pixels,
        original_size=(width, height),
        view=view,
        source_format=source_format,
        metadata=meta,
    )
