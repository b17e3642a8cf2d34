"""Burned-in text: BurnedInAnnotation=YES refused by default; with redaction on, Tesseract finds the
text in DICOM and plain images alike and it is blacked out, a lone laterality marker is kept."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from imaging_helpers import grey8, make_dicom, phantom, png_bytes
from PIL import Image, ImageDraw, ImageFont

from cxr_agent.settings import Settings
from tools.ingestion.loader import BurnedInText, StudyError, load_study
from tools.ingestion.redact import _words, tesseract_available

REFUSE = Settings(burned_in_text="refuse")
REDACT = Settings(burned_in_text="redact")
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")  # Debian's fonts-dejavu-core


def _ocr_missing_reason() -> str:
    import shutil

    if shutil.which("tesseract") is None:
        return "the tesseract binary is not on PATH (Debian package tesseract-ocr; `make ocr` installs it)"
    return "tesseract is on PATH but `tesseract --version` failed through pytesseract"


needs_ocr = pytest.mark.skipif(not tesseract_available(), reason=_ocr_missing_reason() if not tesseract_available() else "")
needs_font = pytest.mark.skipif(not FONT.exists(), reason=f"{FONT} missing (Debian package fonts-dejavu-core)")

H, W = 480, 400
TEXT_BOX = (20, 16, 300, 60)  # x1, y1, x2, y2 of "DOE JOHN 483920"
MARKER_BOX = (352, 392, 392, 448)  # the lone "L", far from any other text


def _with_text() -> np.ndarray:
    """A chest-like phantom with a name/MRN line burned in at the top and an L marker bottom right."""
    img = grey8(phantom(H, W))
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(str(FONT), 30)
    draw.text((TEXT_BOX[0] + 4, TEXT_BOX[1] + 6), "DOE JOHN 483920", fill=255, font=font)
    draw.text((MARKER_BOX[0] + 8, MARKER_BOX[1] + 8), "L", fill=255, font=ImageFont.truetype(str(FONT), 36))
    return np.asarray(img, dtype=np.float64) / 255.0


def _region(a: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x1, y1, x2, y2 = box
    return a[y1:y2, x1:x2]


# ---- refused by default -----------------------------------------------------------------------
def test_burned_in_dicom_refused_before_decoding_naming_the_setting(monkeypatch, caplog):
    import tools.ingestion.dicom_io

    def boom(*a, **k):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(tools.ingestion.dicom_io, "_decode_pixels", boom)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BurnedInText) as info:
        load_study(make_dicom(BurnedInAnnotation="YES"), settings=REFUSE)
    msg = str(info.value)
    assert isinstance(info.value, StudyError)
    assert "BurnedInAnnotation" in msg and "CXR_AGENT_BURNED_IN_TEXT=redact" in msg


def test_flag_no_or_absent_loads_without_ocr(monkeypatch):
    import tools.ingestion.redact

    monkeypatch.setattr(tools.ingestion.redact, "find_text", lambda *a: pytest.fail("OCR ran under the refuse policy"))
    for flag in ("NO", None):
        tags = {"BurnedInAnnotation": flag} if flag else {}
        study = load_study(make_dicom(**tags), settings=REFUSE)
        assert "redaction" not in study.metadata and "burned_in_annotation" not in study.metadata


def test_redaction_without_tesseract_refuses_rather_than_passing_text_on(monkeypatch):
    import pytesseract

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    with pytest.raises(BurnedInText, match="tesseract-ocr"):
        load_study(make_dicom(BurnedInAnnotation="YES"), settings=REDACT)
    with pytest.raises(BurnedInText, match="OCR engine is not installed"):
        load_study(png_bytes(grey8(phantom())), settings=REDACT)


# ---- redacted when opted in -----------------------------------------------------------------
@needs_ocr
@needs_font
def test_dicom_with_flag_is_redacted_and_the_marker_kept():
    pixels = _with_text()
    baseline = load_study(make_dicom(pixels, bits=8), settings=REFUSE)  # same pixels, no flag, no OCR
    study = load_study(make_dicom(pixels, bits=8, BurnedInAnnotation="YES"), settings=REDACT)
    assert study.metadata["burned_in_annotation"] is True
    red = study.metadata["redaction"]
    assert red["method"] == "tesseract-ocr" and red["redacted"] is True and red["regions"] >= 2
    before, after = _region(baseline.pixels, TEXT_BOX), _region(study.pixels, TEXT_BOX)
    ink = before >= 0.99  # the white text's pixels
    assert int(ink.sum()) > 300
    assert float(after[ink].max()) == 0.0  # every one blacked out
    np.testing.assert_array_equal(_region(study.pixels, MARKER_BOX), _region(baseline.pixels, MARKER_BOX))
    assert study.id != baseline.id  # the id hashes what is stored: the redacted pixels


@needs_ocr
@needs_font
def test_plain_png_is_redacted_too():
    data = png_bytes(Image.fromarray(np.rint(_with_text() * 255).astype(np.uint8)))
    plain = load_study(data, settings=REFUSE)
    assert "redaction" not in plain.metadata  # off by default: PNGs carry no flag
    study = load_study(data, settings=REDACT)
    assert study.metadata["redaction"]["redacted"] is True
    ink = _region(plain.pixels, TEXT_BOX) >= 0.99
    assert int(ink.sum()) > 300 and float(_region(study.pixels, TEXT_BOX)[ink].max()) == 0.0
    np.testing.assert_array_equal(_region(study.pixels, MARKER_BOX), _region(plain.pixels, MARKER_BOX))
    # outside the text the image is untouched
    np.testing.assert_array_equal(study.pixels[120:, :300], plain.pixels[120:, :300])


@needs_ocr
def test_image_without_text_is_unchanged():
    data = png_bytes(grey8(phantom(H, W)))
    study = load_study(data, settings=REDACT)
    assert study.metadata["redaction"] == {
        "method": "tesseract-ocr", "redacted": False, "regions": 0, "laterality_markers_kept": 0,
    }  # fmt: skip
    np.testing.assert_array_equal(study.pixels, load_study(data, settings=REFUSE).pixels)


@needs_ocr
def test_flagged_dicom_where_ocr_finds_nothing_is_refused_not_stored():
    with pytest.raises(BurnedInText, match="OCR found none"):
        load_study(make_dicom(phantom(H, W), BurnedInAnnotation="YES"), settings=REDACT)


# ---- scanned for identifiers without the flag ------------------------------------------------
SCAN = Settings(burned_in_text="refuse", burned_in_scan=True)


def _film(*lines: tuple[str, tuple[int, int]]) -> bytes:
    img = grey8(phantom(H, W))
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(str(FONT), 24)
    for text, xy in lines:
        draw.text(xy, text, fill=255, font=font)
    return png_bytes(img)


@needs_ocr
@needs_font
def test_scan_passes_a_film_with_only_its_usual_markers():
    data = _film(("PORTABLE SUPINE", (20, 16)), ("08:42", (300, 16)), ("L", (360, 400)))
    study = load_study(data, settings=SCAN)
    scan = study.metadata["burned_in_scan"]
    assert scan["identifiers"] == 0 and scan["words"] >= 2  # the markers were read, and are normal
    assert "redaction" not in study.metadata


@needs_ocr
@needs_font
@pytest.mark.parametrize("line", ["NAME: DOE^JOHN", "MRN 48392011", "DOB: 03/14/1952"])
def test_scan_refuses_identifier_like_text_without_quoting_it(line):
    data = _film((line, (20, 16)), ("PORTABLE", (20, 420)))
    assert "burned_in_scan" not in load_study(data, settings=REFUSE).metadata  # no scan unless asked
    with pytest.raises(BurnedInText, match="looks like a patient identifier") as err:
        load_study(data, settings=SCAN)
    for part in line.replace(":", " ").split():
        assert part not in str(err.value)


@needs_ocr
@needs_font
def test_redact_with_scan_blacks_out_only_the_identifier():
    data = _film(("MRN 48392011", (20, 16)), ("PORTABLE", (20, 420)))
    plain = load_study(data, settings=REFUSE)
    study = load_study(data, settings=Settings(burned_in_text="redact", burned_in_scan=True))
    red = study.metadata["redaction"]
    assert red["redacted"] is True and red["identifiers_only"] is True
    top, bottom = (slice(0, 60), slice(0, 260)), (slice(410, 460), slice(0, 200))
    ink = plain.pixels[top] >= 0.99
    assert int(ink.sum()) > 100 and float(study.pixels[top][ink].max()) == 0.0  # the record number is gone
    np.testing.assert_array_equal(study.pixels[bottom], plain.pixels[bottom])  # PORTABLE stays


def test_identifier_words_are_found_on_their_line():
    from tools.ingestion.redact import identifier_words

    words = _words(_ocr([("PORTABLE", 95, 1), ("SUPINE", 95, 1), ("MRN", 95, 2), ("48392011", 95, 2),
                         ("L", 96, 3), ("2019-03-04", 95, 4), ("08:15", 95, 4)]), 1.0, 1000)
    flagged, kinds = identifier_words(words)
    assert [w.text for w in flagged] == ["MRN", "48392011"] and dict(kinds) == {"record_number": 1}


def _ocr(words: list[tuple[str, float, int]]) -> dict[str, list]:
    """A Tesseract image_to_data dict: (text, confidence, line number) per word, 20 px apart."""
    n = len(words)
    return {
        "text": [w[0] for w in words], "conf": [w[1] for w in words], "line_num": [w[2] for w in words],
        "block_num": [1] * n, "par_num": [1] * n, "left": [40 * i for i in range(n)], "top": [10] * n,
        "width": [30] * n, "height": [20] * n,
    }  # fmt: skip


def test_only_a_lone_l_or_r_on_its_own_line_counts_as_a_marker():
    words = _words(_ocr([("R", 95, 1), ("JOHN", 95, 2), ("R", 95, 2), ("DOE", 95, 2), ("L.", 96, 3)]), 1.0, 1000)
    assert [w.laterality for w in words] == [True, False, False, False, True]  # an initial is not a marker


def test_low_confidence_and_non_text_reads_are_ignored():
    words = _words(_ocr([("Ae", 73, 1), ("4", 87, 2), ("((", 99, 3), ("MRN123", 91, 4)]), 1.0, 1000)
    assert len(words) == 1  # texture reads (seen on real radiographs) are not blacked out
