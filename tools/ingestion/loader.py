"""Ingestion: any uploaded PNG, JPEG or DICOM -> a de-identified, display-ready Study.

``load_study`` is the only way a file enters the system. It sniffs the format from the
content (magic bytes; an extension that disagrees only earns a note, tools.ingestion.formats), checks
the size from the header before decoding anything (Settings.max_image_pixels), decodes
(Pillow / pydicom via tools.ingestion.dicom_io) with at most Settings.decode_concurrency decodes at once,
checks the image polarity, handles burned-in text (refused, or redacted by OCR: tools.ingestion.redact),
quantises to uint16 and returns a Study whose pixels are float32 (H, W) in [0, 1] on that grid,
bone bright, at the original resolution; the id hashes the quantised pixels. Every refusal is a
StudyError subclass with a message for a clinician; no other exception escapes.

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
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tools.ingestion.formats import FORMAT_NAMES, SUPPORTED, extension_note, sniff_format
from tools.ingestion.study import (
    MAX_PIXELS,
    MAX_SIDE,
    MIN_SIDE,
    BurnedInText,
    CorruptFile,
    ImageTooLarge,
    ImageTooSmall,
    IngestBusy,
    NotAChestRadiograph,
    SourceFormat,
    Study,
    StudyError,
    UnsupportedFormat,
    View,
    check_size,
    dequantise,
    pixel_hash,
    quantise,
)

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

__all__ = [
    "MAX_FILE_BYTES",
    "BurnedInText",
    "IngestBusy",
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
FLAGGED_BUT_NOTHING_FOUND = (
    "This DICOM declares burned-in text (BurnedInAnnotation = YES) but OCR found none to black out (it may be "
    "stylised or very small), so it was not loaded: the text would have been stored with the image. Upload "
    "a copy without burned-in text."
)
DECODE_WAIT_S = 120.0  # an upload waits this long for a free decode slot before it is refused
_SLOTS_LOCK = threading.Lock()
_slots: tuple[int, threading.BoundedSemaphore] | None = None


def _decode_slots(n: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore bounding concurrent decodes (each can hold ~1 GB while it runs)."""
    global _slots
    with _SLOTS_LOCK:
        if _slots is None or _slots[0] != n:
            _slots = (n, threading.BoundedSemaphore(n))
        return _slots[1]


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


def _decode_raster(data: bytes, fmt: str, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, dict[str, Any]]:
    from PIL import Image, ImageOps

    formats = ["PNG"] if fmt == "png" else ["JPEG", "MPO"]
    name = FORMAT_NAMES[fmt]
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
    check_size(width, height, max_pixels)  # from the header, before decoding any pixel
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
def load_study(
    source: str | Path | bytes, *, filename: str | None = None, settings: Settings | None = None
) -> Study:
    """Decode a PNG, JPEG or DICOM (path, bytes or binary file object) into a de-identified Study.

    filename (optional) is used only to note when its extension disagrees with the content; it is
    never stored or logged. settings (default: the process-wide ones) gives the pixel cap, the
    burned-in text policy and the decode concurrency. Raises a StudyError subclass
    (UnsupportedFormat, CorruptFile, NotAChestRadiograph, ImageTooLarge, ImageTooSmall,
    BurnedInText, IngestBusy) and nothing else.
    """
    if settings is None:
        from cxr_agent.settings import get_settings

        settings = get_settings()
    slots = _decode_slots(settings.decode_concurrency)
    if not slots.acquire(timeout=DECODE_WAIT_S):
        log.info("study refused: every decode slot busy")
        raise IngestBusy("The server is busy reading other images; upload the image again in a minute.")
    try:
        study = _load(source, filename, settings)
    except StudyError as exc:
        log.info("study refused: %s: %s", type(exc).__name__, exc)
        raise
    except MemoryError:
        log.info("study refused: out of memory while decoding")
        raise ImageTooLarge("The image is too large to decode in memory.") from None
    except Exception as exc:  # last line of defence: a decoder bug must not crash the app
        log.warning("study refused: unexpected %s while decoding", type(exc).__name__)
        raise CorruptFile("The file could not be decoded: it is damaged or in an unsupported variant.") from None
    finally:
        slots.release()
    log.info(
        "study ingested: id=%s format=%s size=%dx%d view=%s",
        study.id[:12], study.source_format, study.width, study.height, study.view,
    )  # fmt: skip
    return study


def _load(source: Any, filename: str | None, settings: Settings) -> Study:
    data, filename = _read_source(source, filename)
    if not data:
        raise CorruptFile("The file is empty (0 bytes). Upload it again.")
    fmt = sniff_format(data)
    format_note = extension_note(filename, fmt)
    if fmt not in SUPPORTED:
        if fmt is None:
            raise UnsupportedFormat(
                "The file is not a PNG, JPEG or DICOM image (its content is not recognised). "
                "Upload a chest X-ray in one of those formats."
            )
        raise UnsupportedFormat(
            f"This is a {FORMAT_NAMES[fmt]} file; cxr-agent reads PNG, JPEG and DICOM. "
            "Convert the image to one of those and upload it again."
        )
    view: View = "unknown"
    source_format: SourceFormat
    if fmt == "dicom":
        from tools.ingestion.dicom_io import decode_dicom

        decoded = decode_dicom(
            data, max_pixels=settings.max_image_pixels, allow_burned_in=settings.burned_in_text == "redact"
        )
        pixels, view, meta = decoded.pixels, decoded.view, decoded.metadata
        source_format = "dicom"
    else:
        pixels, meta = _decode_raster(data, fmt, settings.max_image_pixels)
        source_format = "png" if fmt == "png" else "jpeg"
    if format_note:
        meta["format_note"] = format_note
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
    if settings.burned_in_text == "redact":  # every image, DICOM or not: text is found in the pixels
        from tools.ingestion.redact import redact_text

        flagged = bool(meta.get("burned_in_annotation"))  # declared text: all of it goes
        pixels, meta["redaction"] = redact_text(pixels, identifiers_only=settings.burned_in_scan and not flagged)
        if flagged and not meta["redaction"]["redacted"]:
            raise BurnedInText(FLAGGED_BUT_NOTHING_FOUND)  # the text is there; OCR could not see it
    elif settings.burned_in_scan:  # refuse mode: only identifier-like text refuses
        from tools.ingestion.redact import scan_identifiers

        meta["burned_in_scan"] = scan_identifiers(pixels)
    stored = quantise(pixels)  # what the store keeps and the id hashes
    pixels = dequantise(stored)
    height, width = pixels.shape
    return Study(
        id=pixel_hash(stored),
        pixels=pixels,
        original_size=(width, height),
        view=view,
        source_format=source_format,
        metadata=meta,
    )
