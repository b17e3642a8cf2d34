"""No identifying DICOM value reaches Study.metadata, repr(study), logs, warnings or the store."""

from __future__ import annotations

import json
import logging
import warnings

import pytest
from imaging_helpers import PHI, make_dicom

from tools.ingestion.deid import age_bucket, parse_age_string, safe_metadata
from tools.ingestion.loader import load_study
from tools.ingestion.store import StudyStore

IDENTIFYING = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientAddress", "OtherPatientIDs", "AccessionNumber",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "ReferringPhysicianName",
    "PerformingPhysicianName", "OperatorsName", "StationName", "DeviceSerialNumber", "StudyID",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "StudyDate", "SeriesDate",
    "AcquisitionDate", "ContentDate", "StudyTime", "SeriesTime", "ContentTime", "InstanceCreationDate",
    "ImageComments", "StudyDescription", "SeriesDescription",
)  # fmt: skip


def _phi_strings() -> list[str]:
    """Every full PHI value plus its distinctive fragments (names, numbers)."""
    fragments = ["Quillon", "Wallaby", "Elsewhere", "Gregory", "Meredith", "Tommy", "Michaela", "77331",
                 "90210", "5550123", "424242", "SECRET", "771234", "STUDY4242", "latex", "Doe^Jane"]  # fmt: skip
    return list(PHI.values()) + fragments + ["Private Quillon Note", "Doe Jane PA chest"]


def _everything_derived(study, caplog, caught, tmp_path) -> str:
    store = StudyStore(tmp_path / "store")
    sid = store.put(study)
    stored = "".join(p.read_text() for p in (tmp_path / "store").rglob("*.json"))
    return "\n".join(
        [repr(study), str(study.metadata), json.dumps(study.metadata), caplog.text, stored, sid]
        + [str(w.message) for w in caught]
    )


def test_crafted_dicom_with_phi_in_every_identifying_tag(caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    data = make_dicom(phi=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = load_study(data, filename="Doe_Jane_Quillon.dcm")
    blob = _everything_derived(study, caplog, caught, tmp_path)
    for s in _phi_strings():
        assert s not in blob, f"PHI leaked: {s!r}"
    assert "Doe_Jane" not in blob  # the file name is never stored or logged
    # and the useful facts survive
    assert study.metadata["modality"] == "CR" and study.view == "PA"
    assert study.metadata["patient_age"] == "70-79"  # from birth date and study date, bucketed
    assert study.metadata["patient_sex"] == "F"


def test_metadata_is_allow_listed():
    study = load_study(make_dicom(phi=True, PatientAge="062Y"))
    allowed = {
        "modality", "body_part", "view_position", "photometric_interpretation", "bits_stored", "rows",
        "columns", "pixel_spacing_mm", "manufacturer", "lossy_compression", "patient_age", "patient_sex",
        "transfer_syntax", "voi", "inverted", "view_source", "notes", "polarity_score",
        "polarity_corrected", "polarity_warning",
    }  # fmt: skip
    assert set(study.metadata) <= allowed
    assert study.metadata["patient_age"] == "60-69"


def test_malformed_phi_values_do_not_leak_via_warnings(caplog):
    """Old ACR-NEMA style values make pydicom warn, quoting them; those warnings must not surface."""
    caplog.set_level(logging.DEBUG)
    data = make_dicom(phi=True)
    data = data.replace(b"19510417", b"1951.4.7").replace(b"20240229", b"2024-2-9")
    data = data.replace(b"99.424242.3", b"99.424242X3")  # an invalid UID: pydicom logs such values verbatim
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = load_study(data)
    text = caplog.text + "".join(str(w.message) for w in caught) + repr(study)
    for s in ("1951.4.7", "2024-2-9", "Quillon", "424242"):
        assert s not in text


def test_pydicom_value_logs_are_muted_inside_decoding(caplog):
    """Even if decoding touched a malformed identifying value, pydicom's verbatim log line is dropped."""
    import pydicom

    import tools.ingestion.dicom_io as dio

    caplog.set_level(logging.DEBUG)
    data = make_dicom(phi=True).replace(b"99.424242.1", b"99.424242Y1")
    real_decode = dio._decode

    def touching_decode(raw: bytes, *args):
        ds = pydicom.dcmread(__import__("io").BytesIO(raw))
        _ = ds.StudyInstanceUID  # would log "Invalid value for VR UI: '...424242Y'"
        return real_decode(raw, *args)

    dio._decode = touching_decode
    try:
        load_study(data)
    finally:
        dio._decode = real_decode
    assert "424242Y" not in caplog.text
    ds = pydicom.dcmread(__import__("io").BytesIO(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _ = ds.StudyInstanceUID  # outside decoding pydicom's logging is untouched
    assert "424242Y" in caplog.text


def test_real_dicoms_leak_nothing(shared_data, caplog, tmp_path):
    import pydicom

    caplog.set_level(logging.DEBUG)
    for path in sorted((shared_data / "dicom").glob("*.dcm")):
        ds = pydicom.dcmread(path, force=True)
        values = []
        for keyword in IDENTIFYING:
            value = ds.get(keyword)
            if value not in (None, ""):
                values.append(str(value))
        assert values, path.name
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            study = load_study(path)
        blob = _everything_derived(study, caplog, caught, tmp_path)
        for v in values:
            if len(v) >= 4:
                assert v not in blob, f"{path.name}: {v!r} leaked"


@pytest.mark.parametrize(
    ("value", "bucket"),
    [("062Y", "60-69"), ("62", "60-69"), ("090Y", "90+"), ("104Y", "90+"), ("006M", "0-9"), ("010D", "0-9"), ("19Y", "10-19"), ("abc", None)],
)
def test_age_buckets(value, bucket):
    assert age_bucket(parse_age_string(value)) == bucket


def test_safe_metadata_ignores_unlisted_tags():
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PatientName = "Doe^Jane"
    ds.Modality = "DX"
    ds.PatientSex = "X"  # not a valid code: dropped
    ds.PixelSpacing = [0, 0]  # meaningless: dropped
    assert safe_metadata(ds) == {"modality": "DX"}
