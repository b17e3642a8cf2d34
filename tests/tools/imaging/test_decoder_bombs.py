"""Compressed DICOM bombs: a 512 x 512 header around a 12000 x 12000 codestream.

The header passes the pixel cap; only the codestream's own size (JPEG 2000 SIZ, JPEG-LS and JPEG
SOF markers) shows what the decoder would allocate. Each bomb is loaded in a child process that
reports its own peak memory growth, so a decoder that allocates the full frame fails the bound.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from imaging_helpers import phantom

from tools.ingestion.codestream import codestream_size
from tools.ingestion.loader import load_study
from tools.ingestion.study import CorruptFile

ROOT = Path(__file__).resolve().parents[3]
BOMB_SIDE = 12_000
PEAK_GROWTH_BOUND_MB = 64  # a 12000 x 12000 frame is 144 MB at 8 bits; a refusal allocates nothing near that

_PROBE = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[2])
from tools.ingestion.loader import load_study
from tools.ingestion.study import StudyError
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_study(data)
    outcome = "loaded"
except StudyError as exc:
    outcome = type(exc).__name__
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "growth_mb": (after - before) / 1024}))
"""


def _codestreams() -> dict[str, tuple[str, bytes]]:
    import jpeg_ls
    import openjpeg
    from PIL import Image
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless

    frame = np.zeros((BOMB_SIDE, BOMB_SIDE), np.uint8)  # uniform: compresses to a few hundred bytes
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=50)
    return {
        "jpeg2000": (JPEG2000Lossless, bytes(openjpeg.encode(frame))),
        "jpeg-ls": (JPEGLSLossless, bytes(jpeg_ls.encode(frame))),
        "jpeg": (JPEGBaseline8Bit, buf.getvalue()),
    }


def _dicom_around(codestream: bytes, syntax: str, rows: int = 512, cols: int = 512) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].is_undefined_length = True
    ds["PixelData"].VR = "OB"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    paths = {}
    for name, (syntax, stream) in _codestreams().items():
        path = root / f"{name}.dcm"
        path.write_bytes(_dicom_around(stream, syntax))
        paths[name] = path
    return paths


@pytest.mark.parametrize("kind", ["jpeg2000", "jpeg-ls", "jpeg"])
def test_codestream_bomb_is_refused_before_decoding(bombs, kind):
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(bombs[kind]), str(ROOT)],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["outcome"] == "ImageTooLarge", result
    assert result["growth_mb"] < PEAK_GROWTH_BOUND_MB, result


@pytest.mark.parametrize("kind", ["jpeg2000", "jpeg-ls", "jpeg"])
def test_codestream_size_is_read_from_the_markers(kind):
    import jpeg_ls
    import openjpeg
    from PIL import Image

    frame = (np.arange(96 * 80, dtype=np.uint32).reshape(96, 80) % 251).astype(np.uint8)
    if kind == "jpeg2000":
        stream = bytes(openjpeg.encode(frame))
    elif kind == "jpeg-ls":
        stream = bytes(jpeg_ls.encode(frame))
    else:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG")
        stream = buf.getvalue()
    size = codestream_size(stream)
    assert size is not None and (size.width, size.height, size.components) == (80, 96, 1)


def test_codestream_that_disagrees_with_the_header_is_refused_as_damaged():
    import jpeg_ls

    frame = np.round(phantom(96, 80) * 255).astype(np.uint8)
    data = _dicom_around(bytes(jpeg_ls.encode(frame)), "1.2.840.10008.1.2.4.80", rows=128, cols=128)
    with pytest.raises(CorruptFile, match="declared size"):
        load_study(data)


def test_codestream_without_a_frame_header_is_refused():
    data = _dicom_around(b"\xff\xd8\xff\xd9", "1.2.840.10008.1.2.4.50")
    with pytest.raises(CorruptFile):
        load_study(data)


def test_a_matching_compressed_dicom_still_loads():
    import jpeg_ls

    frame = np.round(phantom(96, 80) * 255).astype(np.uint8)
    study = load_study(_dicom_around(bytes(jpeg_ls.encode(frame)), "1.2.840.10008.1.2.4.80", rows=96, cols=80))
    assert study.width == 80 and study.height == 96


def _deflated_bomb(path: Path, inflated_mb: int = 512) -> None:
    """A deflated DICOM (a few hundred KB) whose dataset inflates to ``inflated_mb`` of zeros."""
    import struct
    import zlib

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = io.BytesIO()
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    ds = Dataset()
    ds.Modality = "CR"
    small = io.BytesIO()
    ds.save_as(small, implicit_vr=False, little_endian=True)  # no file meta: the bare dataset
    size = inflated_mb * 2**20
    element = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, size)  # PixelData: zeros
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with path.open("wb") as fh:
        fh.write(head.getvalue())
        fh.write(z.compress(small.getvalue() + element))
        chunk = b"\x00" * 2**24
        for _ in range(size // len(chunk)):
            fh.write(z.compress(chunk))
        fh.write(z.flush())


def test_a_deflated_dicom_is_refused_before_it_is_inflated(tmp_path):
    path = tmp_path / "deflated.dcm"
    _deflated_bomb(path)
    assert path.stat().st_size < 2 * 2**20
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(path), str(ROOT)], capture_output=True, text=True,
                          timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["outcome"] == "UnsupportedFormat" and result["growth_mb"] < PEAK_GROWTH_BOUND_MB, result
