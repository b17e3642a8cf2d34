"""Every real image and DICOM in ../shared/data loads, at its labelled size, bone bright."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from tools.ingestion.loader import load_study, polarity_score
from tools.ingestion.study import pixel_hash

_REPO = Path(__file__).resolve().parents[3]


def _data_dir() -> Path | None:  # mirrors tests/conftest.py:shared_data_dir (needed at collection time)
    for c in (os.environ.get("CXR_AGENT_SHARED_DATA"), _REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if c and Path(c, "README.md").exists():
            return Path(c)
    return None


def _rows(folder: str) -> list[dict[str, str]]:
    d = _data_dir()
    if d is None or not (d / folder / "labels.csv").exists():
        return []
    with open(d / folder / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


RASTER = [(folder, row) for folder in ("nih_cxr14", "covid_chestxray", "tbx11k_samples") for row in _rows(folder)]
DICOM = _rows("dicom")


def _check_invariants(study) -> None:
    px = study.pixels
    assert px.dtype == np.float32 and px.ndim == 2
    assert np.isfinite(px).all() and px.min() >= 0.0 and px.max() <= 1.0
    assert px.max() > px.min()  # not blank
    assert study.id == pixel_hash(px)
    assert study.original_size == (px.shape[1], px.shape[0])


@pytest.mark.parametrize(
    ("folder", "row"), RASTER, ids=[f"{f}/{Path(r['filename']).name}" for f, r in RASTER] or None
)
def test_raster_file_loads_at_labelled_size_bone_bright(shared_data, folder, row):
    path = shared_data / folder / row["filename"]
    study = load_study(path)
    _check_invariants(study)
    assert study.original_size == (int(row["width"]), int(row["height"]))
    assert study.source_format == ("png" if path.suffix.lower() == ".png" else "jpeg")
    assert study.view == "unknown"
    assert polarity_score(study.pixels) > 0.2, "real frontal CXRs are bone bright"
    assert "polarity_corrected" not in study.metadata and "polarity_warning" not in study.metadata


def test_raster_rows_were_found(shared_data):
    assert len(RASTER) >= 100  # 92 NIH + 14 COVID + 3 TBX11K


@pytest.mark.parametrize("row", DICOM, ids=[r["filename"][:24] for r in DICOM] or None)
def test_dicom_loads_with_header_facts(shared_data, row):
    study = load_study(shared_data / "dicom" / row["filename"])
    _check_invariants(study)
    assert study.original_size == (int(row["columns"]), int(row["rows"]))
    assert study.source_format == "dicom"
    assert study.view == row["view"]
    assert study.metadata["modality"] == row["modality"]
    assert study.metadata["body_part"] == row["body_part"]
    assert study.metadata["photometric_interpretation"] == row["photometric"]
    assert study.metadata["bits_stored"] == int(row["bits_stored"])
    assert polarity_score(study.pixels) > 1.0, "bone must come out bright"


def _raw(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.uid import ImplicitVRLittleEndian

    ds = pydicom.dcmread(path, force=True)
    if "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds.pixel_array.astype(np.float64)


@pytest.mark.parametrize("name", ["CR-MONO1-10-chest.dcm", "RG1_J2KI.dcm"])
def test_monochrome1_is_inverted(shared_data, name):
    """Raw MONOCHROME1 values are high where the film is white-ish... i.e. inverse: bone dark in raw."""
    path = shared_data / "dicom" / name
    study = load_study(path)
    raw = _raw(path)
    assert polarity_score(raw) < -1.0  # the stored values, shown naively, are a negative
    assert study.metadata["inverted"] is True and study.metadata["voi"] == "window"
    assert "polarity_corrected" not in study.metadata
    corr = np.corrcoef(raw.ravel(), study.pixels.astype(np.float64).ravel())[0, 1]
    assert corr < -0.9  # display = decreasing function of the stored value


def test_legacy_file_without_preamble_loads(shared_data):
    path = shared_data / "dicom" / "CR-MONO1-10-chest.dcm"
    assert path.read_bytes()[128:132] != b"DICM"
    study = load_study(path.read_bytes(), filename=path.name)
    assert study.metadata["transfer_syntax"] == "Implicit VR Little Endian"


def test_jpeg2000_window_maps_onto_unit_range(shared_data):
    """RG1: window 15000/30000 over 15-bit data -> display = 1 - clip(v / 30000)."""
    path = shared_data / "dicom" / "RG1_J2KI.dcm"
    study = load_study(path)
    raw = _raw(path)
    assert study.metadata["transfer_syntax"] == "JPEG 2000 Image Compression"
    expected = 1.0 - np.clip(raw / 30000.0, 0, 1)
    assert np.abs(study.pixels - expected).max() < 1e-3


def test_siim_fake_monochrome1_is_detected_and_corrected(shared_data):
    d = shared_data / "dicom"
    real = load_study(next(d.glob("siim_1.2*.dcm")))
    fake = load_study(d / "siim_Fake_MONOCHROME1.dcm")
    assert real.metadata["photometric_interpretation"] == "MONOCHROME2"
    assert fake.metadata["photometric_interpretation"] == "MONOCHROME1"
    assert "polarity_warning" not in real.metadata
    assert fake.metadata["polarity_corrected"] is True
    assert "MONOCHROME1" in fake.metadata["polarity_warning"]
    assert np.array_equal(real.pixels, fake.pixels) and real.id == fake.id
    assert polarity_score(fake.pixels) > 1.0


def test_real_files_whose_extension_disagrees_with_their_content_load_with_a_note(shared_data, tmp_path):
    """Content decides the format. Any real file already misnamed in the data set loads as it is;
    real PNG/JPEG radiographs saved under the other extension (as some collections ship them) too."""
    from tools.ingestion.formats import sniff_format

    files = sorted(p for p in shared_data.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    misnamed = [p for p in files if sniff_format(p.read_bytes()[:600]) != ("png" if p.suffix.lower() == ".png" else "jpeg")]
    for path in misnamed:
        assert "format_note" in load_study(path).metadata
    covid = shared_data / "covid_chestxray" / "images"
    for real, fake_suffix in ((covid / "ARDSSevere.png", ".jpg"), (covid / "40779_2020_233_Fig2_HTML-a.png", ".jpeg"),
                              (covid / "00cfd1c1.jpg", ".png")):
        if not real.exists():
            pytest.skip(f"{real.name} not in the shared data")
        renamed = tmp_path / (real.stem + fake_suffix)
        renamed.write_bytes(real.read_bytes())  # a temporary copy outside the repository
        original, study = load_study(real), load_study(renamed)
        assert study.id == original.id and study.source_format == original.source_format
        assert "format_note" not in original.metadata
        assert f"content is {original.source_format.upper()}" in study.metadata["format_note"]
