"""DICOM -> display-ready pixels, view and safe metadata, with pydicom.

The display pipeline is the standard's (PS3.4 N.2): decode (pylibjpeg for JPEG 2000 /
JPEG-LS / JPEG lossless), Modality LUT (rescale), VOI LUT or window centre/width, then the
presentation step (MONOCHROME1 is inverted so bone is bright). Everything that decides whether
to decode (modality, pixel data present, frame count, Rows x Columns) is checked from the
header first, so a hostile header is refused without decoding anything; a compressed frame's own
codestream size (tools.ingestion.codestream) is checked against the same cap and the header.

Multi-frame objects are refused: a chest radiograph is one frame; several frames mean
fluoroscopy, tomosynthesis or a stack, and silently showing frame 1 could hide the one that
matters. Identifying header values never leave this module: only deid.safe_metadata() output
does, and error messages never quote header values: modality and body part are named from
fixed vocabularies (deid.MODALITIES / deid.body_part_term), anything else is "other".

Burned-in text: a header declaring BurnedInAnnotation = YES is refused before decoding unless
the caller allows it (Settings.burned_in_text = "redact"; tools.ingestion.loader then redacts the text).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tools.ingestion.codestream import (
    DEFLATED,
    codestream_size,
    file_meta_transfer_syntax,
    first_frame_prefix,
)
from tools.ingestion.deid import body_part_term, safe_metadata
from tools.ingestion.study import (
    MAX_PIXELS,
    BurnedInText,
    CorruptFile,
    NotAChestRadiograph,
    StudyError,
    UnsupportedFormat,
    View,
    check_size,
)
from tools.interop.quiet import header_values_muted

# Projection radiography modalities we accept; DR is not a DICOM term but some vendors write it.
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG"})
_MODALITY_NAMES = {
    "CT": "a CT scan",
    "MR": "an MRI study",
    "US": "an ultrasound study",
    "NM": "a nuclear medicine study",
    "PT": "a PET scan",
    "SR": "a structured report (text, no image)",
    "MG": "a mammogram",
    "XA": "an angiography study",
    "RF": "a fluoroscopy study",
    "PX": "a dental panoramic radiograph",
    "IO": "an intra-oral dental radiograph",
    "KO": "a key-object selection note (no image)",
    "PR": "a presentation state (no image)",
    "SEG": "a segmentation object",
    "RTSTRUCT": "a radiotherapy structure set",
    "DOC": "a document",
    "ECG": "an ECG",
    "XC": "an external-camera photograph",
    "ES": "an endoscopy study",
    "OP": "an ophthalmic photograph",
}
BURNED_IN_REFUSAL = (
    "This DICOM declares burned-in annotation (BurnedInAnnotation = YES): text such as a patient's "
    "name or ID may be part of the image itself, so it was not loaded. Upload a copy without burned-in "
    "text, or ask the administrator to set CXR_AGENT_BURNED_IN_TEXT=redact so such text is found (OCR) "
    "and blacked out before the image is used."
)


@dataclass
class DecodedDicom:
    pixels: np.ndarray  # float64 (H, W) in [0, 1], bone bright according to the header
    view: View
    metadata: dict[str, Any] = field(default_factory=dict)


def read_dataset(data: bytes) -> Any:
    """Parse DICOM bytes (with or without the 128-byte preamble and file meta)."""
    import pydicom
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if file_meta_transfer_syntax(data) == DEFLATED:  # pydicom would inflate it whole, with no bound
        raise UnsupportedFormat(
            "This DICOM is stored with the Deflated transfer syntax (the whole file zip-compressed), which is "
            "not accepted for images: it can expand without limit. Export it uncompressed or JPEG-compressed."
        )
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception:
        raise CorruptFile(
            "The DICOM file could not be read: it is truncated or damaged. Export it again from the PACS."
        ) from None
    if "TransferSyntaxUID" not in ds.file_meta:
        # Legacy files (no preamble, no group 0002): use the encoding pydicom detected.
        implicit, little = getattr(ds, "original_encoding", (True, True))
        if implicit:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        else:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    return ds


def _int(ds: Any, keyword: str, default: int | None = None) -> int | None:
    try:
        v = ds.get(keyword)
        return default if v is None or v == "" else int(v)
    except Exception:
        return default


def _str(ds: Any, keyword: str) -> str:
    try:
        v = ds.get(keyword)
    except Exception:
        return ""
    if v is None:
        return ""
    if not isinstance(v, str) and hasattr(v, "__iter__"):
        v = " ".join(str(x) for x in v)
    return str(v).strip().upper()


def check_is_radiograph(ds: Any, notes: list[str]) -> None:
    """Refuse non-radiograph modalities, non-chest body parts and image-less objects."""
    modality = _str(ds, "Modality")
    if modality and modality not in RADIOGRAPH_MODALITIES and modality != "OT":
        what = _MODALITY_NAMES.get(modality, "a study of another modality")  # never the header's own text
        raise NotAChestRadiograph(
            f"This DICOM is {what}, not a chest radiograph. Upload a chest X-ray (CR or DX)."
        )
    if not modality:
        notes.append("The DICOM has no modality; assumed to be a radiograph.")
    elif modality == "OT":
        notes.append("The DICOM's modality is 'other' (OT); assumed to be a radiograph.")
    part = body_part_term(_str(ds, "BodyPartExamined"))
    if part not in (None, "chest"):
        if part != "other":
            raise NotAChestRadiograph(f"This radiograph is of the {part}, not the chest. Upload a chest X-ray.")
        notes.append("The DICOM's body part is not one recognised as chest; check this is a chest X-ray.")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        sop = _sop_class_name(ds)
        raise NotAChestRadiograph(
            f"This DICOM contains no image{f' (it is a {sop})' if sop else ''}. Upload a chest X-ray image."
        )


def _sop_class_name(ds: Any) -> str:
    try:
        uid = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
        name = uid.name if uid is not None and hasattr(uid, "name") else ""
        return "" if not name or name == str(uid) else name  # unknown UIDs: say nothing
    except Exception:
        return ""


def check_geometry(ds: Any, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Rows/Columns/frames/samples from the header, refused before any pixel is decoded."""
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if not rows or not cols:
        raise CorruptFile("The DICOM image has no valid size (Rows/Columns); the file is damaged.")
    check_size(cols, rows, max_pixels)
    frames = _int(ds, "NumberOfFrames", 1) or 1
    if frames > 1:
        raise NotAChestRadiograph(
            f"This DICOM holds {frames} frames (e.g. fluoroscopy or tomosynthesis), not a single chest "
            "radiograph. Export the single image you want read."
        )
    samples = _int(ds, "SamplesPerPixel", 1) or 1
    if samples not in (1, 3):
        raise CorruptFile(f"The DICOM declares {samples} samples per pixel; only 1 (grey) or 3 (colour) are valid.")
    return cols, rows


def _codestream_syntaxes() -> frozenset[str]:
    from pydicom.uid import JPEG2000TransferSyntaxes, JPEGLSTransferSyntaxes, JPEGTransferSyntaxes

    return frozenset({*JPEGTransferSyntaxes, *JPEGLSTransferSyntaxes, *JPEG2000TransferSyntaxes})


def check_codestream(ds: Any, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse a JPEG / JPEG-LS / JPEG 2000 frame whose own codestream declares more pixels than the cap,
    or another size or more components than the header: the decoder allocates what the codestream says."""
    if str(ds.file_meta.TransferSyntaxUID) not in _codestream_syntaxes() or "PixelData" not in ds:
        return
    try:
        frame = codestream_size(first_frame_prefix(ds.PixelData))
    except Exception:
        frame = None
    if frame is None:
        raise CorruptFile(
            "The DICOM's compressed image data declares no readable frame size; the file is damaged. "
            "Export it again from the PACS."
        )
    check_size(frame.width, frame.height, max_pixels)
    samples = _int(ds, "SamplesPerPixel", 1) or 1
    if (frame.height, frame.width) != (_int(ds, "Rows"), _int(ds, "Columns")) or frame.components > samples:
        raise CorruptFile("The DICOM image data does not match its declared size; the file is damaged.")


def _decode_pixels(ds: Any) -> np.ndarray:
    from pydicom.pixels.decoders.base import get_decoder

    tsyntax = ds.file_meta.TransferSyntaxUID
    if tsyntax.is_compressed:
        try:
            available = get_decoder(tsyntax).is_available
        except Exception:
            available = False
        if not available:
            raise UnsupportedFormat(
                f"This DICOM is compressed with {tsyntax.name}, which cannot be decoded here "
                "(install pylibjpeg, pylibjpeg-openjpeg, pylibjpeg-libjpeg, or python-gdcm)."
            )
    try:
        return np.asarray(ds.pixel_array)
    except MemoryError:
        raise CorruptFile("The DICOM image is too large to decode in memory.") from None
    except Exception:
        raise CorruptFile(
            "The DICOM image data could not be decoded: the file is truncated or damaged. "
            "Export it again from the PACS."
        ) from None


def _luminance(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def to_display(arr: np.ndarray, ds: Any, meta: dict[str, Any]) -> np.ndarray:
    """Modality LUT -> VOI LUT/window -> [0, 1] (float64) -> MONOCHROME1 inversion. Records what it did."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    photometric = _str(ds, "PhotometricInterpretation")
    if arr.ndim == 3:  # colour (RGB, YBR decoded to RGB, palette): luminance, no LUTs apply
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            arr = apply_color_lut(arr, ds)
        meta["voi"] = "none"
        out = _luminance(arr)
        lo, hi = float(out.min()), float(out.max())
        meta["inverted"] = False
        return (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)

    values = apply_modality_lut(arr, ds).astype(np.float64)  # a copy: safe to modify in place
    out, voi = values, "none"
    lo = hi = None
    has_lut = bool(ds.get("VOILUTSequence"))
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    if has_lut or has_window:
        try:
            # A VOI LUT indexes integer modality outputs; windowing works on the rescaled floats.
            voi_input = np.rint(values).astype(np.int64) if has_lut else values
            out = np.asarray(apply_voi_lut(voi_input, ds, index=0), dtype=np.float64)
            voi = "lut" if has_lut else "window"
            if not has_lut:  # window output spans a fixed range: probe it to map onto [0, 1]
                probe = np.asarray(apply_voi_lut(np.array([-1e15, 1e15]), ds, index=0), dtype=np.float64)
                lo, hi = float(probe.min()), float(probe.max())
        except Exception:
            out, voi = values, "none"  # malformed VOI: fall back to the full range
            meta.setdefault("notes", []).append("The DICOM's window/VOI LUT is malformed and was ignored.")
    if lo is None or hi is None or not hi > lo:
        lo, hi = float(np.min(out)), float(np.max(out))
    if hi > lo:  # in place (out is always our own float64 copy): ~30 MB for a 2k x 2k radiograph
        out -= lo
        out *= 1.0 / (hi - lo)
        np.clip(out, 0.0, 1.0, out=out)
    else:
        out[...] = 0.0
    inverted = photometric == "MONOCHROME1"
    if inverted:
        np.subtract(1.0, out, out=out)
    meta["voi"] = voi
    meta["inverted"] = inverted
    return out


# ---- view ----------------------------------------------------------------------------------
_VIEW_POSITION = {
    "PA": "PA", "AP": "AP", "LL": "LATERAL", "RL": "LATERAL", "LAT": "LATERAL",
    "LATERAL": "LATERAL",
}  # fmt: skip
_TEXT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("PA", re.compile(r"\bP\.?A\b|POSTERO[\s\-]?ANTERIOR|\bPOST[\s\-]?ANT\b")),
    ("AP", re.compile(r"\bA\.?P\b|ANTERO[\s\-]?POSTERIOR|\bANT[\s\-]?POST\b|\bSUPINE\b|\bPORTABLE\b|\bBEDSIDE\b")),
    ("LATERAL", re.compile(r"\bLAT(ERAL)?\b|\bLL\b|\bRL\b")),
)


def _view_from_text(text: str) -> View | None:
    hits = {view for view, pattern in _TEXT_PATTERNS if pattern.search(text)}
    return hits.pop() if len(hits) == 1 else None  # type: ignore[return-value]


def infer_view(ds: Any) -> tuple[View, str]:
    """PA/AP/LATERAL/unknown from ViewPosition, then ViewCodeSequence, PatientOrientation, descriptions.

    Returns (view, the tag it came from). Conflicting cues (e.g. "PA AND LAT") give "unknown".
    """
    vp = _str(ds, "ViewPosition")
    if vp in _VIEW_POSITION:
        return _VIEW_POSITION[vp], "ViewPosition"  # type: ignore[return-value]
    try:
        codes = " ".join(str(item.get("CodeMeaning", "")) for item in ds.get("ViewCodeSequence") or [])
    except Exception:
        codes = ""
    view = _view_from_text(codes.upper())
    if view:
        return view, "ViewCodeSequence"
    try:
        orientation = [str(v).upper() for v in (ds.get("PatientOrientation") or [])]
    except Exception:
        orientation = []
    if orientation and orientation[0][:1] in ("A", "P"):  # rows run front-back: a lateral projection
        return "LATERAL", "PatientOrientation"
    for keyword in ("SeriesDescription", "ProtocolName", "StudyDescription"):
        view = _view_from_text(_str(ds, keyword))
        if view:
            return view, keyword
    return "unknown", "none"


# ---- entry point ---------------------------------------------------------------------------
def decode_dicom(data: bytes, *, max_pixels: int = MAX_PIXELS, allow_burned_in: bool = False) -> DecodedDicom:
    """Decode DICOM bytes into display-ready pixels; refusals raise StudyError subclasses.

    allow_burned_in: decode a BurnedInAnnotation = YES image (the caller redacts it) instead of
    refusing it with BurnedInText."""
    try:
        # pydicom warns about and logs invalid header values, quoting them (UIDs, dates, names): this
        # thread's are dropped (per thread: concurrent decodes never unmute each other).
        with header_values_muted(), np.errstate(all="ignore"):
            return _decode(data, max_pixels, allow_burned_in)
    except StudyError:
        raise
    except MemoryError:
        raise CorruptFile("The DICOM image is too large to decode in memory.") from None
    except Exception:
        raise CorruptFile("The DICOM file could not be processed: its header or image data is damaged.") from None


def _decode(data: bytes, max_pixels: int, allow_burned_in: bool) -> DecodedDicom:
    ds = read_dataset(data)
    if not _looks_like_dicom(ds):
        raise UnsupportedFormat("The file is not a PNG, JPEG or DICOM image.")
    notes: list[str] = []
    check_is_radiograph(ds, notes)
    check_geometry(ds, max_pixels)
    check_codestream(ds, max_pixels)
    burned_in = _str(ds, "BurnedInAnnotation") == "YES"
    if burned_in and not allow_burned_in:
        raise BurnedInText(BURNED_IN_REFUSAL)
    meta = safe_metadata(ds)
    if burned_in:
        meta["burned_in_annotation"] = True
    try:
        tsyntax = ds.file_meta.TransferSyntaxUID
        if tsyntax.is_transfer_syntax:  # a UID in pydicom's dictionary: a fixed name, never header text
            meta["transfer_syntax"] = tsyntax.name
    except Exception:
        pass
    arr = _decode_pixels(ds)
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4):
        raise CorruptFile("The DICOM image has an unexpected shape; the file is damaged.")
    expected = (_int(ds, "Rows"), _int(ds, "Columns"))
    if arr.shape[:2] != expected:
        raise CorruptFile("The DICOM image data does not match its declared size; the file is damaged.")
    meta["notes"] = notes
    pixels = to_display(arr, ds, meta)
    if not np.isfinite(pixels).all():
        raise CorruptFile("The DICOM image contains invalid (non-finite) values.")
    view, view_source = infer_view(ds)
    meta["view_source"] = view_source
    if not meta["notes"]:
        del meta["notes"]
    return DecodedDicom(pixels=pixels, view=view, metadata=meta)


def _looks_like_dicom(ds: Any) -> bool:
    """force=True parses almost anything; a real image object has some of these tags."""
    keys = ("PixelData", "Rows", "Columns", "Modality", "SOPClassUID", "PhotometricInterpretation")
    try:
        return sum(1 for k in keys if k in ds) >= 2
    except Exception:
        return False
