"""Malformed, hostile or wrong inputs are refused with the right StudyError subclass."""

from __future__ import annotations

import numpy as np
import pytest
from imaging_helpers import grey8, jpeg_bytes, jpeg_claiming, make_dicom, phantom, png_bytes, png_header_only
from PIL import Image

from tools.ingestion.loader import (
    CorruptFile,
    ImageTooLarge,
    ImageTooSmall,
    NotAChestRadiograph,
    StudyError,
    UnsupportedFormat,
    load_study,
)

PNG = png_bytes(grey8(phantom()))
JPEG = jpeg_bytes(grey8(phantom()))
DCM = make_dicom()


def test_empty():
    with pytest.raises(CorruptFile, match="empty"):
        load_study(b"")


def test_random_bytes():
    rng = np.random.default_rng(0)
    with pytest.raises(UnsupportedFormat, match="not a PNG, JPEG or DICOM"):
        load_study(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())


def test_text_file():
    with pytest.raises(UnsupportedFormat):
        load_study(b"patient,finding\n1,effusion\n" * 20)


@pytest.mark.parametrize(
    ("data", "name", "said", "actual"),
    [
        (DCM, "scan.png", "PNG", "DICOM"),
        (PNG, "scan.dcm", "DICOM", "PNG"),
        (JPEG, "scan.png", "PNG", "JPEG"),
        (PNG, "scan.JPG", "JPEG", "PNG"),
        (PNG, "scan.tiff", "TIFF", "PNG"),
    ],
)
def test_content_decides_and_a_wrong_extension_is_noted(data, name, said, actual):
    study = load_study(data, filename=name)
    assert study.id == load_study(data).id  # the same image as without a name
    note = study.metadata["format_note"]
    assert f"says {said}" in note and f"content is {actual}" in note
    assert "scan" not in repr(study.metadata)  # the file name (possibly a patient's name) is never kept


def test_wrong_extension_from_path(tmp_path):
    path = tmp_path / "image.jpg"
    path.write_bytes(PNG)
    study = load_study(path)
    assert study.source_format == "png" and "says JPEG" in study.metadata["format_note"]


def test_matching_extension_adds_no_note():
    assert "format_note" not in load_study(PNG, filename="a.png").metadata


@pytest.mark.parametrize("name", ["scan.png", "scan.jpg", "scan.dcm"])
def test_content_that_is_not_a_supported_image_is_still_refused(name):
    buf = __import__("io").BytesIO()
    grey8(phantom()).save(buf, format="TIFF")
    with pytest.raises(UnsupportedFormat, match="TIFF"):
        load_study(buf.getvalue(), filename=name)
    with pytest.raises(UnsupportedFormat, match="not a PNG, JPEG or DICOM"):
        load_study(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes(), filename=name)


@pytest.mark.parametrize("name", ["1.2.840.113619.2.55.3.6041.dcm", "1.2.840.113619.2.55", "IM0001", "x.IMA", "x.bin", None])
def test_unknown_or_no_extension_lets_content_decide(name):
    assert load_study(DCM, filename=name).source_format == "dicom"


def test_other_image_formats_are_named():
    buf = __import__("io").BytesIO()
    grey8(phantom()).save(buf, format="TIFF")
    with pytest.raises(UnsupportedFormat, match="TIFF"):
        load_study(buf.getvalue())


def test_missing_file(tmp_path):
    with pytest.raises(CorruptFile, match="does not exist"):
        load_study(tmp_path / "Doe_Jane.png")


def test_wrong_source_type():
    with pytest.raises(UnsupportedFormat):
        load_study(12345)  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [PNG[: len(PNG) // 2], JPEG[: len(JPEG) // 2], PNG[:40], JPEG[:30]])
def test_truncated_raster(data):
    with pytest.raises(CorruptFile):
        load_study(data)


def test_truncated_dicom_pixel_data():
    with pytest.raises(CorruptFile):
        load_study(DCM[: len(DCM) - 3000])


@pytest.mark.parametrize("value", [0, 128, 255])
def test_blank_image(value):
    with pytest.raises(CorruptFile, match="blank"):
        load_study(png_bytes(Image.fromarray(np.full((100, 100), value, np.uint8))))
    with pytest.raises(CorruptFile, match="blank"):
        load_study(make_dicom(np.full((100, 100), value, np.uint16)))


def test_too_small():
    with pytest.raises(ImageTooSmall, match="32 x 40"):
        load_study(png_bytes(Image.fromarray(np.zeros((40, 32), np.uint8))))
    with pytest.raises(ImageTooSmall):
        load_study(make_dicom(phantom(50, 200)))


def _forbid_decoding(monkeypatch):
    from PIL import ImageFile

    import tools.ingestion.dicom_io

    def boom(*a, **k):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", boom)
    monkeypatch.setattr(tools.ingestion.dicom_io, "_decode_pixels", boom)


@pytest.mark.parametrize("size", [(60000, 60000), (11000, 11000), (20000, 100)])
def test_huge_png_header_refused_without_decoding(monkeypatch, size):
    _forbid_decoding(monkeypatch)
    data = png_header_only(*size)
    assert len(data) < 200
    with pytest.raises(ImageTooLarge):
        load_study(data, filename="bomb.png")


def test_huge_jpeg_header_refused_without_decoding(monkeypatch):
    _forbid_decoding(monkeypatch)
    with pytest.raises(ImageTooLarge):
        load_study(jpeg_claiming(60000, 60000))


def test_huge_dicom_header_refused_without_decoding(monkeypatch):
    _forbid_decoding(monkeypatch)
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(DCM))
    ds.Rows = ds.Columns = 60000  # PixelData stays tiny: only the header lies
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(ImageTooLarge, match="60000 x 60000"):
        load_study(buf.getvalue())


def test_pillow_bomb_guard_stays_on():
    from PIL import Image as PILImage

    load_study(PNG)
    assert PILImage.MAX_IMAGE_PIXELS is not None and PILImage.MAX_IMAGE_PIXELS <= 200_000_000


@pytest.mark.parametrize(
    ("modality", "what"),
    [("CT", "CT"), ("MR", "MRI"), ("US", "ultrasound"), ("NM", "nuclear"), ("PT", "PET"), ("MG", "mammogram"), ("XA", "angiography")],
)
def test_non_radiograph_modalities(modality, what):
    with pytest.raises(NotAChestRadiograph, match=what):
        load_study(make_dicom(modality=modality))


def _dicom_without_pixels(modality: str, sop_class: str) -> bytes:
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = "Doe^Jane"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_structured_report():
    with pytest.raises(NotAChestRadiograph, match="structured report"):
        load_study(_dicom_without_pixels("SR", "1.2.840.10008.5.1.4.1.1.88.22"))


def test_radiograph_header_without_pixel_data():
    data = _dicom_without_pixels("CR", "1.2.840.10008.5.1.4.1.1.1")
    with pytest.raises(NotAChestRadiograph, match="no image"):
        load_study(data)


def test_multiframe_refused():
    stack = np.concatenate([phantom(96, 80)] * 3)  # 3 frames' worth of pixels
    with pytest.raises(NotAChestRadiograph, match="3 frames"):
        load_study(make_dicom(stack, Rows=96, NumberOfFrames=3))


def test_non_chest_body_part():
    with pytest.raises(NotAChestRadiograph, match="hand"):
        load_study(make_dicom(BodyPartExamined="HAND"))


def test_unrecognised_body_part_only_noted_never_echoed():
    study = load_study(make_dicom(BodyPartExamined="PORTTHING"))
    assert any("not one recognised as chest" in n for n in study.metadata["notes"])
    assert study.metadata["body_part"] == "OTHER" and "PORTTHING" not in repr(study.metadata)


def test_every_refusal_is_a_value_error():
    for exc in (UnsupportedFormat, CorruptFile, NotAChestRadiograph, ImageTooLarge, ImageTooSmall):
        assert issubclass(exc, StudyError) and issubclass(exc, ValueError)
