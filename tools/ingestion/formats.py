"""Image formats by content: magic-byte sniffing and what a file's extension claims.

Content decides the format (a PNG named .jpg is read as the PNG it is); the extension only adds
a note to the study's metadata when it disagrees. Messages and notes use the fixed format names
below and never quote the file name or its suffix (a file name may carry a patient's name).
"""

from __future__ import annotations

from pathlib import Path

FORMAT_NAMES = {
    "png": "PNG",
    "jpeg": "JPEG",
    "dicom": "DICOM",
    "tiff": "TIFF",
    "gif": "GIF",
    "bmp": "BMP",
    "webp": "WebP",
    "jpeg2000": "JPEG 2000 (bare, not inside DICOM)",
    "pdf": "PDF",
    "zip": "ZIP archive",
    "gzip": "gzip archive",
    "nifti": "NIfTI",
    "text": "text",
}
_EXTENSIONS = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".jpe": "jpeg",
    ".jfif": "jpeg",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".dic": "dicom",
    ".ima": "dicom",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".gif": "gif",
    ".bmp": "bmp",
    ".webp": "webp",
    ".jp2": "jpeg2000",
    ".j2k": "jpeg2000",
    ".pdf": "pdf",
    ".zip": "zip",
    ".gz": "gzip",
    ".nii": "nifti",
    ".txt": "text",
    ".csv": "text",
    ".json": "text",
}
SUPPORTED = ("png", "jpeg", "dicom")


# ---- format sniffing ---------------------------------------------------------------------------
def sniff_format(data: bytes) -> str | None:
    """The format named by the content's magic bytes (see FORMAT_NAMES), or None if unknown."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM") and len(data) > 26:
        return "bmp"
    if head.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")):
        return "jpeg2000"
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if len(data) >= 348 and data[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "nifti"
    if _looks_like_legacy_dicom(data):
        return "dicom"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in data[:512]):
        return "text"
    return None


def _looks_like_legacy_dicom(data: bytes) -> bool:
    """A DICOM stream with no preamble/file meta starts with a group 0x0002 or 0x0008 tag."""
    if len(data) < 8:
        return False
    group = int.from_bytes(data[0:2], "little")
    element = int.from_bytes(data[2:4], "little")
    return group in (0x0002, 0x0008) and element < 0x2000


def extension_note(filename: str | None, content: str | None) -> str | None:
    """A note when the file's extension names a different format than its content (None if they agree).

    Unknown or missing extensions (e.g. a UID-named DICOM) say nothing: the content decides."""
    if not filename or content not in SUPPORTED:
        return None
    claimed = _EXTENSIONS.get(Path(filename).suffix.lower())
    if claimed is None or claimed == content:
        return None
    return (
        f"The file's extension says {FORMAT_NAMES[claimed]} but its content is {FORMAT_NAMES[content]}; "
        f"it was read as {FORMAT_NAMES[content]}."
    )
