"""Synthetic inputs for the ingestion tests: a chest-like phantom and crafted PNG/JPEG/DICOM bytes."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image


def phantom(h: int = 192, w: int = 160) -> np.ndarray:
    """A frontal-chest-like image in [0, 1], bone bright: bright body and mediastinum, dark lungs, dark air."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.full((h, w), 0.05)  # air
    body = ((xx - w / 2) / (0.47 * w)) ** 2 + ((yy - h / 2) / (0.55 * h)) ** 2 < 1
    img[body] = 0.65
    for cx in (0.3 * w, 0.7 * w):  # lungs
        lung = ((xx - cx) / (0.14 * w)) ** 2 + ((yy - 0.48 * h) / (0.3 * h)) ** 2 < 1
        img[lung] = 0.2
    spine = np.abs(xx - w / 2) < 0.06 * w
    img[spine & body] = 0.9
    img += 0.02 * np.sin(xx / 3.0) * np.cos(yy / 5.0)  # texture so nothing is flat
    return np.clip(img, 0.0, 1.0)


def png_bytes(img: Image.Image, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def jpeg_bytes(img: Image.Image, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def grey8(img: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(img * 255).astype(np.uint8), mode="L")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (valid CRCs) followed by a tiny IDAT and IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small valid JPEG whose SOF0 frame header is patched to claim width x height."""
    data = bytearray(jpeg_bytes(grey8(phantom(96, 96))))
    i = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, i + 5, height, width)
    return bytes(data)


PHI = {
    "PatientName": "Doe^Jane^Quillon",
    "PatientID": "PID-77331-XQ",
    "PatientBirthDate": "19510417",
    "PatientAddress": "42 Wallaby Way, Sydney",
    "PatientTelephoneNumbers": "+61-555-0199",
    "OtherPatientIDs": "ALT-ID-90210",
    "PatientMotherBirthName": "Quillonmother^Ada",
    "AccessionNumber": "ACC5550123",
    "InstitutionName": "St Elsewhere Hospital",
    "InstitutionAddress": "1 Hospital Rd, Boston",
    "InstitutionalDepartmentName": "Radiology Dept Seven",
    "ReferringPhysicianName": "House^Gregory",
    "PerformingPhysicianName": "Grey^Meredith",
    "OperatorsName": "Tech^Tommy",
    "RequestingPhysician": "Quinn^Michaela",
    "StationName": "XRAYROOM7SECRET",
    "DeviceSerialNumber": "SN-771234",
    "StudyID": "STUDY4242",
    "StudyDate": "20240229",
    "StudyTime": "134501",
    "SeriesDate": "20240228",
    "AcquisitionDate": "20240227",
    "ContentDate": "20240226",
    "InstanceCreationDate": "20240225",
    "StudyInstanceUID": "1.2.826.0.1.3680043.99.424242.1",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.99.424242.2",
    "SOPInstanceUID": "1.2.826.0.1.3680043.99.424242.3",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.99.424242.4",
    "ImageComments": "Jane Quillon, bed 12, allergic to latex",
    "StudyDescription": "Quillon chest study",
    "RequestedProcedureDescription": "Quillon request",
}


def make_dicom(
    pixels: np.ndarray | None = None,
    *,
    bits: int = 12,
    photometric: str = "MONOCHROME2",
    modality: str | None = "CR",
    phi: bool = False,
    preamble: bool = True,
    **tags: Any,
) -> bytes:
    """A small uncompressed DICOM (explicit VR LE) from an image in [0, 1] (or raw uint16 values)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    img = phantom(96, 80) if pixels is None else pixels
    if img.dtype.kind == "f":
        raw = np.round(img * (2**bits - 1)).astype(np.uint16)
        if photometric == "MONOCHROME1":
            raw = (2**bits - 1 - raw).astype(np.uint16)
    else:
        raw = img.astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR Image Storage
    ds.file_meta.MediaStorageSOPInstanceUID = PHI["SOPInstanceUID"] if phi else generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    if modality is not None:
        ds.Modality = modality
    ds.BodyPartExamined = "CHEST"
    ds.Manufacturer = "Acme Imaging"
    ds.PatientSex = "F"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = raw.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [0.2, 0.2]
    if phi:
        for keyword, value in PHI.items():
            setattr(ds, keyword, value)
        ds.SeriesDescription = "Doe Jane PA chest"
        private = ds.private_block(0x0011, "ACME PHI", create=True)
        private.add_new(0x01, "LO", "Private Quillon Note")
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = raw.tobytes()
    buf = io.BytesIO()
    if preamble:
        ds.save_as(buf, enforce_file_format=True)
    else:
        del ds.file_meta
        ds.save_as(buf, implicit_vr=True, little_endian=True)
    return buf.getvalue()
