"""Ingestion cost: load_study vs the bare decoder it wraps, measured in the same run.

Rows (median wall time over repeats, after one warm-up):
- JPEG 2000 DICOM (RG1_J2KI.dcm, 1841x1955, 15-bit): load_study vs pydicom dcmread + pixel_array.
  The difference is the display pipeline (rescale, window, MONOCHROME1, polarity check, sha256 id).
- NIH 1024x1024 PNG: load_study vs PIL open + load + numpy array.
- Refusing a PNG whose header claims 60000x60000 vs decoding the 1024x1024 PNG (should be ~free).
- StudyStore.get of the J2K study vs decoding it again with load_study (the cache's worth).
"""

from __future__ import annotations

import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """Same lookup as tests/conftest.py: $CXR_AGENT_SHARED_DATA, ../shared/data, /work/shared/data."""
    for c in (os.environ.get("CXR_AGENT_SHARED_DATA"), _REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if c and Path(c, "README.md").exists():
            return Path(c)
    return None


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: imports, plugin discovery, page cache
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _row(metric: str, value: float | None, baseline: float | None, target: str | None, note: str) -> dict[str, Any]:
    ratio = value / baseline if value is not None and baseline else None
    return {
        "benchmark": "imaging", "metric": metric, "value": None if value is None else round(value, 3),
        "unit": "ms", "baseline": None if baseline is None else round(baseline, 3),
        "ratio": None if ratio is None else round(ratio, 3), "target": target, "note": note,
    }  # fmt: skip


def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def run(quick: bool = False) -> list[dict[str, Any]]:
    import numpy as np
    import pydicom
    from PIL import Image

    from tools.ingestion.loader import ImageTooLarge, load_study
    from tools.ingestion.store import StudyStore

    repeats = 3 if quick else 10
    data_dir = shared_data_dir()
    rows: list[dict[str, Any]] = []
    if data_dir is None:
        note = "shared data not found (set CXR_AGENT_SHARED_DATA)"
        return [_row(m, None, None, None, note) for m in ("dicom_j2k_load_study", "png_1024_load_study")]

    j2k = data_dir / "dicom" / "RG1_J2KI.dcm"
    png = data_dir / "nih_cxr14" / "images" / "00000002_000.png"
    if j2k.exists():
        j2k_bytes = j2k.read_bytes()
        ours = _median_ms(lambda: load_study(j2k_bytes), repeats)
        base = _median_ms(lambda: pydicom.dcmread(io.BytesIO(j2k_bytes)).pixel_array, repeats)
        rows.append(_row("dicom_j2k_load_study", ours, base, "<= 2x",
                         "RG1_J2KI 1841x1955 15-bit; baseline: pydicom dcmread + pixel_array (pylibjpeg-openjpeg)"))
        study = load_study(j2k_bytes)
        with tempfile.TemporaryDirectory() as tmp:
            store = StudyStore(Path(tmp))
            store.put(study)
            got = _median_ms(lambda: store.get(study.id), repeats)
        rows.append(_row("store_get_vs_decode", got, ours, "<= 0.5x",
                         "StudyStore.get (npy read + sha256 check) vs load_study of the same J2K DICOM"))
    else:
        rows.append(_row("dicom_j2k_load_study", None, None, None, f"{j2k.name} not found"))
    if png.exists():
        png_bytes = png.read_bytes()

        def pil_decode() -> Any:
            with Image.open(io.BytesIO(png_bytes)) as im:
                im.load()
                return np.asarray(im)

        ours = _median_ms(lambda: load_study(png_bytes), repeats)
        base = _median_ms(pil_decode, repeats)
        rows.append(_row("png_1024_load_study", ours, base, "<= 3x",
                         "NIH 00000002_000.png 1024x1024 8-bit; baseline: PIL open + load + np.asarray"))
        bomb = _png_header(60000, 60000)

        def refuse() -> None:
            try:
                load_study(bomb)
            except ImageTooLarge:
                return
            raise AssertionError("60000x60000 header was not refused")

        rows.append(_row("bomb_header_refusal", _median_ms(refuse, repeats), base, "<= 0.1x",
                         "PNG header claiming 60000x60000 refused from the header; baseline: PIL decode of a 1024x1024 PNG"))
        rows.extend(_issue14_rows(png_bytes, ours, repeats))
    else:
        rows.append(_row("png_1024_load_study", None, None, None, f"{png.name} not found"))
    return rows


def _issue14_rows(png_bytes: bytes, plain_ms: float, repeats: int) -> list[dict[str, Any]]:
    """A real 100 MP PNG (~100 KiB of zeros) refused from its header; OCR redaction's cost on a 1024^2 image."""
    import struct
    import zlib

    from cxr_agent.settings import Settings
    from tools.ingestion.loader import ImageTooLarge, load_study
    from tools.ingestion.redact import tesseract_available

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    idat = b"".join(z.compress(b"\x00" * 10_001) for _ in range(10_000)) + z.flush()  # filter byte + 10,000 px a row
    ihdr = struct.pack(">IIBBBBB", 10_000, 10_000, 8, 0, 0, 0, 0)
    big = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")

    def refuse_big() -> None:
        try:
            load_study(big)
        except ImageTooLarge:
            return
        raise AssertionError("a 100 MP PNG was not refused")

    rows = [_row("png_100mp_refusal", _median_ms(refuse_big, repeats), plain_ms, "<= 0.1x",
                 f"valid 10000x10000 PNG of {len(big) // 1024} KiB refused from its header (default cap 40 MP); "
                 "baseline: load_study of a 1024x1024 PNG")]
    if tesseract_available():
        redact = Settings(burned_in_text="redact")
        rows.append(_row("png_1024_redact", _median_ms(lambda: load_study(png_bytes, settings=redact), max(1, repeats // 3)),
                         plain_ms, "opt-in", "load_study with CXR_AGENT_BURNED_IN_TEXT=redact (3 Tesseract passes) vs without"))
    else:
        rows.append(_row("png_1024_redact", None, None, None, "tesseract-ocr not installed (make ocr)"))
    return rows


if __name__ == "__main__":
    import sys

    from rich.console import Console
    from rich.table import Table

    result = run(quick="--quick" in sys.argv)
    table = Table(title="imaging")
    cols = ("metric", "value", "unit", "baseline", "ratio", "target", "note")
    for c in cols:
        table.add_column(c, overflow="fold", max_width=70 if c == "note" else None)
    for r in result:
        table.add_row(*("" if r[c] is None else str(r[c]) for c in cols))
    Console(width=200).print(table)
