"""De-identification of DICOM headers by ALLOW-LIST.

Only the tags named here are ever read into ``Study.metadata``; everything else in the header
(names, IDs, dates, UIDs, institutions, physicians, free-text comments, private tags) is
dropped by construction, so a new or unexpected identifying tag can never leak. Values are
normalised to short, plain types (str/int/float/list) so they serialise to JSON as-is.

Decisions (documented in ARCHITECTURE.md):
- patient age is kept only as a decade bucket ("60-69"); ages of 90 and over become "90+"
  (HIPAA Safe Harbor). It comes from PatientAge, or else from birth date and study date,
  which are read in memory and never stored.
- patient sex (M/F/O) is kept: it is not an identifier under Safe Harbor and changes the
  reading (e.g. heart-size norms).
- manufacturer is kept (not PHI; explains domain shift) as a known vendor name or "other";
  institution, station, department, device serial number and operator/physician names are not.
- every text value kept comes from a FIXED vocabulary (modality, body part, view position,
  photometric interpretation, vendor): a header value outside it becomes "OTHER"/"other", so
  free header text (a name typed into BodyPartExamined) can never reach metadata, a message or
  a log.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

_MAX_TEXT = 64
_CS_RE = re.compile(r"[^A-Z0-9 _\-]")

# DICOM modality defined terms (PS3.3 C.7.3.1.1.1), the ones a file sent here could plausibly carry.
MODALITIES = frozenset({
    "CR", "DX", "DR", "RG", "OT", "CT", "MR", "US", "NM", "PT", "SR", "MG", "XA", "RF", "PX", "IO",
    "KO", "PR", "SEG", "RTSTRUCT", "RTIMAGE", "RTDOSE", "RTPLAN", "DOC", "ECG", "XC", "ES", "OP", "SC",
    "REG", "BI", "BMD", "DG", "GM", "HD", "LS", "OCT", "OPT", "SM", "TG", "VL", "AU", "EPS", "HC",
})  # fmt: skip
VIEW_POSITIONS = frozenset({"PA", "AP", "LL", "RL", "LAT", "LATERAL", "LLO", "RLO", "LAO", "RAO", "LPO", "RPO"})
PHOTOMETRIC = frozenset({
    "MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420",
    "YBR_ICT", "YBR_RCT",
})  # fmt: skip
# BodyPartExamined -> a fixed term: chest spellings in several languages, then parts that are not a chest.
_CHEST_PARTS = ("CHEST", "THORAX", "TORAX", "THORAC", "LUNG", "RIB", "BRUST", "TORACE", "POITRINE", "PECHO")
_NON_CHEST_PARTS = (
    ("SKULL", "skull"), ("BRAIN", "brain"), ("HEAD", "head"), ("FACE", "face"), ("SINUS", "sinuses"),
    ("JAW", "jaw"), ("TMJ", "jaw"), ("TEETH", "teeth"), ("DENT", "teeth"), ("CSPINE", "spine"),
    ("LSPINE", "spine"), ("SPINE", "spine"), ("NECK", "neck"), ("FINGER", "hand"), ("HAND", "hand"),
    ("WRIST", "wrist"), ("FOREARM", "forearm"), ("ELBOW", "elbow"), ("HUMERUS", "arm"),
    ("SHOULDER", "shoulder"), ("ARM", "arm"), ("PELVIS", "pelvis"), ("HIP", "hip"), ("FEMUR", "leg"),
    ("KNEE", "knee"), ("ANKLE", "ankle"), ("FOOT", "foot"), ("TOE", "foot"), ("LEG", "leg"),
    ("EXTREMITY", "limb"), ("ABDOMEN", "abdomen"), ("BREAST", "breast"),
)  # fmt: skip
_VENDORS = (
    ("SIEMENS", "Siemens"), ("PHILIPS", "Philips"), ("AGFA", "Agfa"), ("CARESTREAM", "Carestream"),
    ("KODAK", "Kodak"), ("FUJI", "Fujifilm"), ("CANON", "Canon"), ("TOSHIBA", "Toshiba"),
    ("KONICA", "Konica Minolta"), ("SAMSUNG", "Samsung"), ("SHIMADZU", "Shimadzu"), ("HOLOGIC", "Hologic"),
    ("VAREX", "Varex"), ("TRIXELL", "Trixell"), ("VIEWORKS", "Vieworks"), ("RAYENCE", "Rayence"),
    ("DRGEM", "DRGEM"), ("MINDRAY", "Mindray"), ("ZIEHM", "Ziehm"),
    ("IMAGING DYNAMICS", "Imaging Dynamics"), ("SWISSRAY", "Swissray"), ("GENERAL ELECTRIC", "GE"),
    ("GE HEALTHCARE", "GE"), ("GE MEDICAL", "GE"),
)  # fmt: skip


def body_part_term(value: Any) -> str | None:
    """BodyPartExamined -> "chest", a fixed non-chest term ("hand", "pelvis", ...), "other", or None."""
    text = _text(value, upper=True)
    if not text:
        return None
    if any(k in text for k in _CHEST_PARTS):
        return "chest"
    for key, term in _NON_CHEST_PARTS:
        if key in text:
            return term
    return "other"


def _closed(value: Any, vocabulary: frozenset[str]) -> str | None:
    """An upper-case code from `vocabulary`, "OTHER" for anything else, None when empty."""
    text = _text(value, upper=True)
    if not text:
        return None
    return text if text in vocabulary else "OTHER"


def vendor(value: Any) -> str | None:
    """Manufacturer -> a known vendor's name or "other" (the header's text is never kept)."""
    text = _text(value, upper=True)
    if not text:
        return None
    return next((name for key, name in _VENDORS if key in text), "GE" if text in ("GE", "GEMS") else "other")


def _text(value: Any, *, upper: bool = False) -> str | None:
    """A short printable string, or None when empty."""
    if value is None:
        return None
    s = str(value).strip()
    s = "".join(ch for ch in s if ch.isprintable())[:_MAX_TEXT].strip()
    if upper:
        s = _CS_RE.sub("", s.upper()).strip()
    return s or None


def _floats(value: Any) -> list[float] | None:
    if value is None:
        return None
    try:
        items = [value] if isinstance(value, (str, bytes, int, float)) else list(value)
        vals = [float(v) for v in items]
    except (TypeError, ValueError):
        return None
    if not vals or any(not (v > 0 and v < 1e4) for v in vals):
        return None
    return [round(v, 6) for v in vals]


def age_bucket(years: float | None) -> str | None:
    """Decade bucket for an age in years: 62 -> "60-69"; 90 and over -> "90+"."""
    if years is None or not (0 <= years < 150):
        return None
    if years >= 90:
        return "90+"
    lo = int(years // 10) * 10
    return f"{lo}-{lo + 9}"


_AS_RE = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)


def parse_age_string(value: Any) -> float | None:
    """DICOM AS ("062Y", "003M", "010D") -> years; tolerates a bare number ("62")."""
    if value is None:
        return None
    m = _AS_RE.match(str(value))
    if not m:
        return None
    n = int(m.group(1))
    unit = (m.group(2) or "Y").upper()
    return {"D": n / 365.25, "W": n / 52.18, "M": n / 12.0, "Y": float(n)}[unit]


def _parse_da(value: Any) -> date | None:
    s = re.sub(r"[^0-9]", "", str(value or ""))
    if len(s) != 8:
        return None
    try:
        return date(int(s[:4]), int(s[4:6]), int(s[6:8]))
    except ValueError:
        return None


def _age_years(ds: Any) -> float | None:
    years = parse_age_string(ds.get("PatientAge"))
    if years is not None:
        return years
    born = _parse_da(ds.get("PatientBirthDate"))
    if born is None:
        return None
    for kw in ("StudyDate", "AcquisitionDate", "ContentDate", "SeriesDate"):
        seen = _parse_da(ds.get(kw))
        if seen is not None and seen >= born:
            return (seen - born).days / 365.25
    return None


def _get(ds: Any, keyword: str) -> Any:
    """A tag's value, or None when absent or unreadable (malformed headers are common)."""
    try:
        return ds.get(keyword)
    except Exception:  # pydicom converts raw values lazily; a bad value raises here
        return None


def safe_metadata(ds: Any) -> dict[str, Any]:
    """The allow-listed, normalised, non-identifying header facts of a pydicom Dataset."""
    meta: dict[str, Any] = {}

    for kw, key, vocabulary in (("Modality", "modality", MODALITIES), ("ViewPosition", "view_position", VIEW_POSITIONS),
                                ("PhotometricInterpretation", "photometric_interpretation", PHOTOMETRIC)):
        code = _closed(_get(ds, kw), vocabulary)
        if code:
            meta[key] = code
    part = body_part_term(_get(ds, "BodyPartExamined"))
    if part:
        meta["body_part"] = part.upper()
    for kw, key in (("BitsStored", "bits_stored"), ("Rows", "rows"), ("Columns", "columns")):
        v = _get(ds, kw)
        try:
            if v is not None:
                meta[key] = int(v)
        except (TypeError, ValueError):
            pass
    for kw in ("PixelSpacing", "ImagerPixelSpacing"):
        spacing = _floats(_get(ds, kw))
        if spacing:
            meta["pixel_spacing_mm"] = spacing[:2]
            break
    manufacturer = vendor(_get(ds, "Manufacturer"))
    if manufacturer:
        meta["manufacturer"] = manufacturer
    lossy = _text(_get(ds, "LossyImageCompression"))
    if lossy is not None:
        meta["lossy_compression"] = lossy == "01"
    bucket = age_bucket(_safe_age(ds))
    if bucket:
        meta["patient_age"] = bucket
    sex = _text(_get(ds, "PatientSex"), upper=True)
    if sex in {"M", "F", "O"}:
        meta["patient_sex"] = sex
    return meta


def _safe_age(ds: Any) -> float | None:
    try:
        return _age_years(ds)
    except Exception:
        return None
