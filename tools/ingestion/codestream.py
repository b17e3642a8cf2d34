"""The size a compressed DICOM frame declares inside its own codestream, read before decoding.

A DICOM header's Rows x Columns says nothing binding about the JPEG / JPEG-LS / JPEG 2000 stream
inside PixelData: the decoder allocates what the codestream's frame header (JPEG SOF, JPEG-LS
SOF55, JPEG 2000 SIZ) declares, so a tiny file with a 512 x 512 header can make it allocate
hundreds of megabytes. These readers walk only the marker segments up to that frame header.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

# JPEG frame headers (ITU T.81 B.1.1.3): every SOFn except DHT (C4), JPG (C8) and DAC (CC);
# JPEG-LS SOF55 (F7) and its extension SOF57 (F9).
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7, 0xF9})
_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RST0-7, SOI
_SOS, _EOI = 0xDA, 0xD9
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
HEADER_PREFIX_BYTES = 4 * 1024 * 1024  # the frame header sits in the first bytes; never scan more


class FrameSize(NamedTuple):
    width: int
    height: int
    components: int


def codestream_size(stream: bytes) -> FrameSize | None:
    """The frame size a JPEG, JPEG-LS or JPEG 2000 codestream declares; None if none is found.

    A zero dimension (JPEG's "height defined later by DNL", JPEG-LS's "size in an LSE segment")
    counts as not found: the size cannot be known before decoding."""
    if stream[:2] == b"\xff\xd8":
        size = _jpeg_frame(stream)
    else:
        size = _j2k_frame(stream)
    if size is None or size.width <= 0 or size.height <= 0 or size.components <= 0:
        return None
    return size


def _jpeg_frame(data: bytes) -> FrameSize | None:
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        while pos < end and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= end:
            return None
        marker = data[pos]
        pos += 1
        if marker in _NO_LENGTH:
            continue
        if marker in (_SOS, _EOI):
            return None  # scan data before any frame header
        if pos + 2 > end:
            return None
        (length,) = struct.unpack_from(">H", data, pos)
        if marker in _SOF_MARKERS:
            if pos + 8 > end:
                return None
            _, _precision, height, width, components = struct.unpack_from(">HBHHB", data, pos)
            return FrameSize(width, height, components)
        if length < 2:
            return None
        pos += length
    return None


def _j2k_frame(data: bytes) -> FrameSize | None:
    """SIZ (ITU T.800 A.5.1) follows SOC directly, in a bare codestream or inside a JP2 'jp2c' box."""
    at = data.find(_J2K_SOC_SIZ)
    if at < 0:
        return None
    pos = at + 4
    if pos + 38 > len(data):
        return None
    _lsiz, _rsiz, xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">HHIIII", data, pos)
    (csiz,) = struct.unpack_from(">H", data, pos + 36)
    return FrameSize(xsiz - xosiz, ysiz - yosiz, csiz)


def first_frame_prefix(pixel_data: bytes) -> bytes:
    """The first bytes of the first frame of encapsulated PixelData (fragments joined), at most
    HEADER_PREFIX_BYTES; the Basic Offset Table item is skipped."""
    from pydicom.encaps import generate_fragments

    out = bytearray()
    fragments = generate_fragments(pixel_data)
    next(fragments, None)  # the Basic Offset Table (possibly empty)
    for fragment in fragments:
        out += fragment[: HEADER_PREFIX_BYTES - len(out)]
        if len(out) >= HEADER_PREFIX_BYTES or codestream_size(bytes(out)) is not None:
            break
    return bytes(out)


DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: the whole dataset is zlib'd
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


def file_meta_transfer_syntax(data: bytes) -> str | None:
    """The Transfer Syntax UID in a DICOM file's meta group (0002), read by hand without parsing the
    dataset (pydicom inflates a deflated dataset whole, unbounded, before anything can check it).
    None when there is no preamble or no such element."""
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    pos, end = 132, min(len(data), 132 + 65536)  # group 0002 is small; never scan further
    while pos + 8 <= end:
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            return None
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > end:
                return None
            (length,) = struct.unpack_from("<I", data, pos + 8)
            pos += 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            pos += 8
        if element == 0x0010:
            return data[pos : pos + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos += length
    return None
