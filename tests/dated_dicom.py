"""Test films of one patient on given dates: the shared CR sample with its own UIDs, patient, date and
(slightly nudged) pixels, so that each is a study of its own (tests of priors: PACS, CLI, UI)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from orthanc_server import with_file_meta
from pydicom.uid import generate_uid


def dated_film(source: Path, *, patient: str, day: str, seed: int, issuer: str = "HOSP-A", modality: str = "CR",
               sex: str = "M") -> pydicom.Dataset:
    ds = with_file_meta(pydicom.dcmread(source, force=True))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientID, ds.IssuerOfPatientID, ds.PatientName, ds.PatientSex = patient, issuer, "Doe^Prior", sex
    ds.StudyDate, ds.StudyTime, ds.Modality = day, "080000", modality
    pixels = ds.pixel_array
    noise = np.random.default_rng(seed).integers(0, 4, pixels.shape)
    ds.PixelData = np.clip(pixels.astype(np.int64) + noise, 0, 2 ** int(ds.BitsStored) - 1).astype(pixels.dtype).tobytes()
    return ds


def film_bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
