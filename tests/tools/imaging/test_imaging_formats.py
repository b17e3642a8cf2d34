"""PNG/JPEG modes and crafted DICOMs decode to the expected display pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from imaging_helpers import grey8, jpeg_bytes, make_dicom, phantom, png_bytes
from PIL import Image

from tools.ingestion.loader import load_study, polarity_score, sniff_format

P = phantom()

HALF_STEP = 0.5 / 65535 + 1e-7  # pixels are quantised to uint16 at ingest: half a level, plus float32 rounding


def _minmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return (a - a.min()) / (a.max() - a.min())


def test_8bit_grey_png_is_value_over_255():
    img = grey8(P)
    study = load_study(png_bytes(img), filename="x.png")
    np.testing.assert_allclose(study.pixels, np.asarray(img) / 255.0, atol=1e-6)
    assert study.source_format == "png" and study.view == "unknown"
    assert study.original_size == (P.shape[1], P.shape[0])
    assert study.metadata["mode"] == "L" and study.metadata["bit_depth"] == 8


def test_16bit_png_keeps_precision():
    raw = np.round(P * 4095).astype(np.uint16) + 17  # 12-bit detector values in a 16-bit PNG
    data = png_bytes(Image.fromarray(raw))
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    study = load_study(data)
    np.testing.assert_allclose(study.pixels, _minmax(raw), atol=HALF_STEP)
    assert study.metadata["bit_depth"] == 16
    assert len(np.unique(study.pixels)) > 256  # more grey levels than 8 bits could hold


def test_rgb_png_becomes_luminance():
    g = np.asarray(grey8(P))
    rgb = np.stack([g, g, g], axis=-1)
    study = load_study(png_bytes(Image.fromarray(rgb, "RGB")))
    np.testing.assert_allclose(study.pixels, g / 255.0, atol=1e-5)


def test_rgba_png_alpha_composited_on_black():
    g = np.asarray(grey8(P))
    alpha = np.full_like(g, 255)
    alpha[:, : g.shape[1] // 8] = 0  # transparent left margin
    rgba = np.stack([g, g, g, alpha], axis=-1)
    study = load_study(png_bytes(Image.fromarray(rgba, "RGBA")))
    assert study.metadata["alpha"] == "composited on black"
    assert float(study.pixels[:, : g.shape[1] // 8].max()) == 0.0
    np.testing.assert_allclose(study.pixels[:, g.shape[1] // 8 :], g[:, g.shape[1] // 8 :] / 255.0, atol=1e-5)


def test_opaque_rgba_equals_grey():
    g = np.asarray(grey8(P))
    rgba = np.stack([g, g, g, np.full_like(g, 255)], axis=-1)
    study = load_study(png_bytes(Image.fromarray(rgba, "RGBA")))
    assert "alpha" not in study.metadata
    np.testing.assert_allclose(study.pixels, g / 255.0, atol=1e-5)


def test_palette_png():
    img = grey8(P).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    study = load_study(png_bytes(img))
    assert study.metadata["mode"] == "P"
    expected = np.asarray(img.convert("L")) / 255.0
    np.testing.assert_allclose(study.pixels, expected, atol=2 / 255)
    assert polarity_score(study.pixels) > 1.0


def test_greyscale_and_rgb_jpeg():
    grey = load_study(jpeg_bytes(grey8(P)), filename="a.jpg")
    assert grey.source_format == "jpeg" and grey.metadata["mode"] == "L"
    assert np.abs(grey.pixels - P).mean() < 0.02
    rgb = load_study(jpeg_bytes(grey8(P).convert("RGB")), filename="a.JPEG")
    assert np.abs(rgb.pixels - P).mean() < 0.02


def test_cmyk_jpeg():
    study = load_study(jpeg_bytes(grey8(P).convert("CMYK")))
    assert study.metadata["mode"] == "CMYK" and study.pixels.shape == P.shape


def test_exif_orientation_is_applied():
    img = grey8(P)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    study = load_study(jpeg_bytes(img, exif=exif))
    assert study.original_size == (P.shape[0], P.shape[1])  # width and height swapped


def test_negative_png_is_corrected_and_flagged():
    study = load_study(png_bytes(grey8(1.0 - P)))
    assert study.metadata["polarity_corrected"] is True
    assert "negative" in study.metadata["polarity_warning"]
    np.testing.assert_allclose(study.pixels, np.asarray(grey8(P)) / 255.0, atol=1.5 / 255)


def test_sniffing_ignores_extension():
    assert sniff_format(png_bytes(grey8(P))) == "png"
    assert sniff_format(jpeg_bytes(grey8(P))) == "jpeg"
    assert sniff_format(make_dicom()) == "dicom"
    assert sniff_format(make_dicom(preamble=False)) == "dicom"
    assert sniff_format(b"\x00" * 400) is None


# ---- DICOM ---------------------------------------------------------------------------------------
def test_dicom_monochrome1_and_monochrome2_give_the_same_display():
    mono2 = load_study(make_dicom(P, photometric="MONOCHROME2"))
    mono1 = load_study(make_dicom(P, photometric="MONOCHROME1"))
    assert mono1.metadata["inverted"] is True and mono2.metadata["inverted"] is False
    np.testing.assert_allclose(mono1.pixels, mono2.pixels, atol=1e-6 + 1 / 65535)  # at most one uint16 level
    np.testing.assert_allclose(mono2.pixels, _minmax(np.round(P * 4095)), atol=HALF_STEP)
    assert "polarity_warning" not in mono1.metadata


def test_dicom_rescale_then_window():
    raw = np.round(P * 1000).astype(np.uint16)  # stored 0..1000; HU-like = raw * 2 - 500
    study = load_study(
        make_dicom(raw, RescaleSlope=2, RescaleIntercept=-500, WindowCenter=500, WindowWidth=1000)
    )
    values = raw.astype(np.float64) * 2 - 500
    # pydicom LINEAR window: ((v - (c - 0.5)) / (w - 1) + 0.5), clipped
    expected = np.clip(((values - 499.5) / 999.0 + 0.5), 0, 1)
    assert study.metadata["voi"] == "window"
    np.testing.assert_allclose(study.pixels, expected, atol=2e-3)


def test_dicom_voi_lut_sequence():
    from pydicom.dataset import Dataset

    raw = np.round(P * 255).astype(np.uint16)
    item = Dataset()
    item.add_new((0x0028, 0x3002), "US", [256, 0, 16])  # LUTDescriptor (ambiguous VR: give it)
    item.add_new((0x0028, 0x3006), "US", [int(v) for v in np.round(np.linspace(0, 1, 256) ** 0.5 * 65535)])
    study = load_study(make_dicom(raw, bits=8, VOILUTSequence=[item]))
    assert study.metadata["voi"] == "lut"
    expected = np.round((raw / 255.0) ** 0.5 * 65535)
    np.testing.assert_allclose(study.pixels, _minmax(expected), atol=1e-5)


@pytest.mark.parametrize("syntax", ["RLELossless", "JPEG2000Lossless"])
def test_compressed_dicom_matches_uncompressed(syntax):
    import pydicom
    import pydicom.uid

    plain = make_dicom(P)
    ds = pydicom.dcmread(io.BytesIO(plain))
    try:
        ds.compress(getattr(pydicom.uid, syntax))
    except Exception as exc:  # encoder plugin missing here
        pytest.skip(f"cannot encode {syntax} here: {type(exc).__name__}")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    study = load_study(buf.getvalue(), filename="c.dcm")
    assert study.id == load_study(plain).id
    assert study.metadata["transfer_syntax"] != "Explicit VR Little Endian"


def test_dicom_ok_modality_variants_carry_notes():
    other = load_study(make_dicom(modality="OT"))
    assert any("OT" in n for n in other.metadata["notes"])
    missing = load_study(make_dicom(modality=None))
    assert any("no modality" in n for n in missing.metadata["notes"])
    for modality in ("DX", "RG"):
        assert load_study(make_dicom(modality=modality)).metadata["modality"] == modality


@pytest.mark.parametrize(
    ("tags", "view"),
    [
        ({"ViewPosition": "AP"}, "AP"),
        ({"ViewPosition": "LL"}, "LATERAL"),
        ({"SeriesDescription": "CHEST PA"}, "PA"),
        ({"SeriesDescription": "AP PORTABLE"}, "AP"),
        ({"ProtocolName": "Thorax lateral"}, "LATERAL"),
        ({"SeriesDescription": "CHEST PA AND LAT"}, "unknown"),
        ({"PatientOrientation": ["A", "F"]}, "LATERAL"),
        ({"PatientOrientation": ["L", "F"]}, "unknown"),
        ({"SeriesDescription": "CAPACITY"}, "unknown"),  # 'PA' inside a word is not a view
        ({}, "unknown"),
    ],
)
def test_view_inference(tags, view):
    assert load_study(make_dicom(**tags)).view == view


def test_view_code_sequence():
    from pydicom.dataset import Dataset

    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "R-10214", "SRT", "postero-anterior"
    assert load_study(make_dicom(ViewCodeSequence=[code])).view == "PA"


def test_lateral_view_skips_polarity_check():
    study = load_study(make_dicom(1.0 - P, ViewPosition="LL"))
    assert study.view == "LATERAL" and "polarity_score" not in study.metadata
    assert "polarity_corrected" not in study.metadata


def test_file_like_upload_with_name():
    buf = io.BytesIO(png_bytes(grey8(P)))
    buf.name = "upload.png"  # as Streamlit's UploadedFile has
    assert load_study(buf).source_format == "png"
    misnamed = io.BytesIO(png_bytes(grey8(P)))
    misnamed.name = "upload.dcm"  # content decides; the disagreement is noted
    study = load_study(misnamed)
    assert study.source_format == "png" and "says DICOM" in study.metadata["format_note"]


def test_rgb_dicom_becomes_luminance():
    g = np.round(P * 255).astype(np.uint8)
    rgb = np.stack([g, g, g], axis=-1)
    data = make_dicom(
        g, bits=8, photometric="RGB", SamplesPerPixel=3, PlanarConfiguration=0, BitsAllocated=8,
        Modality="DX",
    )  # fmt: skip
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PixelData = rgb.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    study = load_study(out.getvalue())
    np.testing.assert_allclose(study.pixels, _minmax(g), atol=1e-5)
