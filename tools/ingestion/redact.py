"""Burned-in text redaction: find text in the pixels with Tesseract OCR and black it out.

Why: a radiograph can carry the patient's name, MRN or date written into the pixels themselves
(DICOM BurnedInAnnotation = YES, or any screenshot/export); header de-identification cannot
remove it. With Settings.burned_in_text = "redact" every ingested image goes through here.

How: Tesseract (Debian's tesseract-ocr, through pytesseract; Presidio's image redactor would
need a spaCy model that is not on PyPI) runs in sparse-text mode on the image, on its negative,
and on a mask of its near-white pixels (annotation ink over a background that changes from air
to bone), at most OCR_MAX_SIDE pixels a side. Each word read with confidence >= MIN_CONFIDENCE that holds a letter or digit is filled
with black, with a margin. A laterality marker (a lone "L" or "R", alone on its line) is kept:
it is clinical information, not identity, and removing it would make left and right ambiguous.
If Tesseract is missing or fails, the image is refused (BurnedInText), never passed on unredacted.

Scan without redaction (Settings.burned_in_scan, with burned_in_text = "refuse"): every PNG/JPEG and
unflagged DICOM is read the same way and refused only when a line of its text looks like a patient
identifier (tools/identifiers.py: a name after a title or field label, LAST^FIRST, a record number, a
date of birth, ...); the usual markers of a film (L/R, PORTABLE, SUPINE, a time stamp) are not.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from tools.identifiers import find_identifiers
from tools.ingestion.study import BurnedInText

log = logging.getLogger(__name__)

OCR_MAX_SIDE = 2048  # px; larger images are read downscaled (burned-in text is tens of px high)
MIN_CONFIDENCE = 80.0  # Tesseract word confidence (0-100); on 30 real radiographs texture read at most 73
SINGLE_CHAR_CONFIDENCE = 90.0  # a lone character is more often texture ("4", "a" read in lung fields)
MAX_TEXT_HEIGHT = 0.15  # a "word" taller than this fraction of the image is anatomy, not text
BRIGHT_TEXT = 0.96  # fraction of the image maximum above which a pixel may be annotation ink
MARGIN = 0.25  # of the word's height, added on every side of the filled box
OCR_TIMEOUT_S = 60.0
_LATERALITY = re.compile(r"^[^\w]*[LR][^\w]*$")
_HAS_ALNUM = re.compile(r"[A-Za-z0-9]")


@dataclass(frozen=True)
class Word:
    """One word Tesseract read, in full-image pixel coordinates (x, y = top-left)."""

    x: int
    y: int
    w: int
    h: int
    laterality: bool
    text: str = ""
    line: tuple[int, ...] = ()  # (image variant, block, paragraph, line): words read on one line


def tesseract_available() -> bool:
    """True when the tesseract binary can be run (pytesseract is installed with the project)."""
    try:
        import pytesseract

        pytesseract.get_tesseract_version()
        return True
    except Exception:
        return False


def find_text(pixels: np.ndarray) -> list[Word]:
    """Words of burned-in text in a (H, W) [0, 1] image (both polarities). Raises BurnedInText if OCR fails."""
    from PIL import Image

    try:
        import pytesseract
    except ImportError:  # pragma: no cover - a dependency of the project
        raise BurnedInText(_NO_OCR) from None
    h, w = pixels.shape
    scale = min(1.0, OCR_MAX_SIDE / max(h, w))
    img = Image.fromarray(np.rint(np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8), mode="L")
    if scale < 1.0:
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    grey = np.asarray(img)
    # Annotations are usually drawn at full white over a background that changes from air to bone,
    # which defeats Tesseract's global threshold: the near-white mask reads them as black on white.
    mask = Image.fromarray(np.where(grey >= BRIGHT_TEXT * float(grey.max()), 0, 255).astype(np.uint8), mode="L")
    words: list[Word] = []
    for n, variant in enumerate((img, Image.eval(img, lambda v: 255 - v), mask)):
        try:
            data = pytesseract.image_to_data(
                variant, config="--psm 11", output_type=pytesseract.Output.DICT, timeout=OCR_TIMEOUT_S
            )
        except pytesseract.TesseractNotFoundError:
            raise BurnedInText(_NO_OCR) from None
        except Exception as exc:  # timeout (RuntimeError) or a Tesseract failure
            log.warning("OCR failed (%s); image refused", type(exc).__name__)
            raise BurnedInText(
                "The image could not be checked for burned-in text (the OCR step failed or took too long), "
                "so it was not loaded. Upload it again, or upload a copy without burned-in text."
            ) from None
        words.extend(_words(data, scale, h, variant=n))
    return words


def _words(data: dict[str, list[Any]], scale: float, height: int, variant: int = 0) -> list[Word]:
    lines: dict[tuple[int, int, int], int] = {}
    kept: list[tuple[tuple[int, int, int], Word, str]] = []
    for i, raw in enumerate(data.get("text", [])):
        text = str(raw).strip()
        try:
            conf = float(data["conf"][i])
        except (KeyError, TypeError, ValueError):
            continue
        alnum = len(_HAS_ALNUM.findall(text))
        if not alnum or conf < (SINGLE_CHAR_CONFIDENCE if alnum == 1 else MIN_CONFIDENCE):
            continue
        x, y, w, h = (int(round(int(data[k][i]) / scale)) for k in ("left", "top", "width", "height"))
        if h > MAX_TEXT_HEIGHT * height or w <= 0 or h <= 0:
            continue
        line = (int(data["block_num"][i]), int(data["par_num"][i]), int(data["line_num"][i]))
        lines[line] = lines.get(line, 0) + 1
        kept.append((line, Word(x, y, w, h, False), text))
    return [
        Word(wd.x, wd.y, wd.w, wd.h, laterality=bool(_LATERALITY.match(text)) and lines[line] == 1, text=text,
             line=(variant, *line))
        for line, wd, text in kept
    ]


def identifier_words(words: list[Word]) -> tuple[list[Word], Counter[str]]:
    """The words that belong to identifier-like text (tools/identifiers.py) on their OCR line, and the
    kinds found. Film markers (L/R, PORTABLE, SUPINE, a time stamp) are not identifiers."""
    by_line: dict[tuple[int, ...], list[Word]] = {}
    for word in words:
        by_line.setdefault(word.line, []).append(word)
    flagged: list[Word] = []
    kinds: Counter[str] = Counter()
    for line in by_line.values():
        line.sort(key=lambda wd: wd.x)
        spans, text = [], ""
        for word in line:
            start = len(text) + (1 if text else 0)
            text = f"{text} {word.text}" if text else word.text
            spans.append((start, len(text)))
        hits = find_identifiers(text)
        kinds.update(h.kind for h in hits)
        flagged += [wd for wd, (a, b) in zip(line, spans, strict=True) if any(a < h.end and h.start < b for h in hits)]
    return flagged, kinds


def scan_identifiers(pixels: np.ndarray) -> dict[str, Any]:
    """OCR an image and refuse it (BurnedInText) when its burned-in text looks like a patient identifier;
    what was read is summarised by counts only (never the text)."""
    words = find_text(pixels)
    flagged, kinds = identifier_words(words)
    if flagged:
        log.info("burned-in identifier-like text found: %s", ", ".join(sorted(kinds)))
        names = {"name": "a name", "record_number": "a record number", "birth_date": "a date of birth",
                 "phone": "a phone number", "email": "an e-mail address", "ssn": "a social security number"}
        what = ", ".join(names.get(k, k) for k in sorted(kinds))
        raise BurnedInText(
            f"The image carries burned-in text that looks like a patient identifier ({what}), so it was not "
            "loaded. Upload a copy without it, or ask the administrator to set CXR_AGENT_BURNED_IN_TEXT=redact "
            "so such text is blacked out."
        )
    return {"method": "tesseract-ocr", "words": len(words), "identifiers": 0}


def redact_text(pixels: np.ndarray, *, identifiers_only: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Black out burned-in text (laterality markers kept). Returns (new pixels, what was done).

    identifiers_only: black out only the words of identifier-like text (tools/identifiers.py) and keep
    the rest (PORTABLE, SUPINE, a time stamp): for images that do not declare burned-in text."""
    words = find_text(pixels)
    targets = set(identifier_words(words)[0]) if identifiers_only else None
    out = np.array(pixels, copy=True)
    h, w = out.shape
    redacted = markers = 0
    for word in words:
        if word.laterality:
            markers += 1
            continue
        if targets is not None and word not in targets:
            continue
        m = max(2, round(MARGIN * word.h))
        out[max(0, word.y - m) : min(h, word.y + word.h + m), max(0, word.x - m) : min(w, word.x + word.w + m)] = 0.0
        redacted += 1
    info = {"method": "tesseract-ocr", "redacted": redacted > 0, "regions": redacted, "laterality_markers_kept": markers}
    if identifiers_only:
        info["identifiers_only"] = True
    if redacted:
        log.info("burned-in text: %d region(s) redacted, %d laterality marker(s) kept", redacted, markers)
    return out, info


_NO_OCR = (
    "Burned-in text redaction is on (CXR_AGENT_BURNED_IN_TEXT=redact) but the OCR engine is not installed "
    "on this server (Debian package tesseract-ocr), so the image was not loaded. Ask the administrator "
    "to install it."
)
