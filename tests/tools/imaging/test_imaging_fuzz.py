"""Fuzzing: truncated, bit-flipped and overwritten files raise only StudyError (or decode validly)."""

from __future__ import annotations

import io
import logging
import zlib

import numpy as np
import pytest
from imaging_helpers import grey8, jpeg_bytes, make_dicom, phantom, png_bytes

from tools.ingestion.loader import StudyError, load_study
from tools.ingestion.study import pixel_hash


def _j2k_dicom() -> bytes | None:
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    ds = pydicom.dcmread(io.BytesIO(make_dicom()))
    try:
        ds.compress(JPEG2000Lossless)
    except Exception:
        return None
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


SEEDS = {
    "png": png_bytes(grey8(phantom())),
    "png16": png_bytes(__import__("PIL.Image", fromlist=["Image"]).fromarray((phantom() * 4000).astype(np.uint16))),
    "jpeg": jpeg_bytes(grey8(phantom())),
    "dicom": make_dicom(),
    "dicom_legacy": make_dicom(preamble=False),
    "dicom_j2k": _j2k_dicom(),
}


def _mutations(data: bytes, rng: np.random.Generator) -> list[bytes]:
    n = len(data)
    out = []
    for cut in sorted({1, 2, 4, 8, 16, 33, 64, 100, 128, 132, 140, 200, 300, n // 4, n // 2, 3 * n // 4, n - 10, n - 1}):
        if 0 < cut < n:
            out.append(data[:cut])
    for _ in range(40):  # random byte flips anywhere
        b = bytearray(data)
        for pos in rng.integers(0, n, size=int(rng.integers(1, 6))):
            b[pos] ^= int(rng.integers(1, 256))
        out.append(bytes(b))
    for _ in range(30):  # the header, where the sizes and tags live
        b = bytearray(data)
        pos = int(rng.integers(0, min(n, 600)))
        b[pos] = int(rng.integers(0, 256))
        out.append(bytes(b))
    for _ in range(5):  # zeroed or 0xFF runs
        b = bytearray(data)
        start = int(rng.integers(0, n - 1))
        b[start : start + int(rng.integers(4, 64))] = bytes([int(rng.choice([0, 255]))]) * len(b[start : start + 64])
        out.append(bytes(b[:n]))
    out.append(data + b"\x00" * 100)  # trailing junk
    return out


@pytest.mark.parametrize("name", [k for k, v in SEEDS.items() if v is not None])
def test_corruptions_raise_only_study_errors(name, caplog):
    caplog.set_level(logging.WARNING, logger="tools.ingestion.loader")
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    data = SEEDS[name]
    refused = accepted = 0
    for mutated in _mutations(data, rng):
        try:
            study = load_study(mutated)
        except StudyError as exc:
            assert str(exc)  # every refusal explains itself
            refused += 1
            continue
        px = study.pixels
        assert px.dtype == np.float32 and px.ndim == 2 and np.isfinite(px).all()
        assert 0.0 <= px.min() and px.max() <= 1.0 and study.id == pixel_hash(px)
        accepted += 1
    assert refused > 10  # the truncations at least
    # nothing reached the last-resort handler: every failure mode is anticipated and named
    assert "unexpected" not in caplog.text, caplog.text


def _check_outcome(mutated: bytes, **kw) -> bool:
    """True if refused with an explained StudyError, False if accepted as a valid Study."""
    try:
        study = load_study(mutated, **kw)
    except StudyError as exc:
        assert str(exc)
        return True
    px = study.pixels
    assert px.dtype == np.float32 and px.ndim == 2 and np.isfinite(px).all()
    assert 0.0 <= px.min() and px.max() <= 1.0 and study.id == pixel_hash(px)
    return False


def test_real_dicom_corruptions(shared_data, caplog):
    caplog.set_level(logging.WARNING, logger="tools.ingestion.loader")
    data = (shared_data / "dicom" / "siim_Fake_MONOCHROME1.dcm").read_bytes()
    rng = np.random.default_rng(7)
    muts = _mutations(data, rng)[::3]
    outcomes = [_check_outcome(m, filename="x.png") for m in muts]  # a wrong extension too: only a note
    assert sum(outcomes) >= 3 and not all(outcomes)  # truncations refused; some flips still decode
    assert "unexpected" not in caplog.text, caplog.text


@pytest.mark.parametrize("policy", ["refuse", "redact"])
def test_burned_in_paths_raise_only_study_errors(policy, caplog):
    from cxr_agent.settings import Settings
    from tools.ingestion.redact import tesseract_available

    if policy == "redact" and not tesseract_available():
        pytest.skip("tesseract-ocr is not installed (make ocr)")
    caplog.set_level(logging.WARNING, logger="tools.ingestion.loader")
    settings = Settings(burned_in_text=policy)
    data = make_dicom(BurnedInAnnotation="YES")
    rng = np.random.default_rng(11)
    muts = _mutations(data, rng)[:: 2 if policy == "refuse" else 10]  # OCR costs ~0.3 s an image
    outcomes = [_check_outcome(m, settings=settings) for m in muts]
    assert sum(outcomes) >= 2 and len(outcomes) >= 8
    assert "unexpected" not in caplog.text, caplog.text
