"""Weight-file integrity: a sha256 checked before any bytes reach ``torch.load``.

Why: ``torch.load`` of a pickled file can run arbitrary code, and a truncated or swapped file
silently gives wrong predictions. Every model file the product loads with torch is hashed first and
compared with a pin (the catalogue's published hash, when one exists) or, where the publisher
gives no hash (torchxrayvision's release files), with the hash recorded when it was first
downloaded or trusted (trust on first use). The record lives in the owner-only data dir
(``<data_dir>/weights-sha256/``), never beside the weight file: whoever can replace a file in a
shared weights directory could otherwise replace its record too.

``load_verified`` hashes the bytes it then deserialises (no window between check and load; every
product loader uses it); ``verify_file`` checks a file without loading it (status, downloads).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

SIDECAR_SUFFIX = ".sha256"
_CHUNK = 1 << 20


class WeightsIntegrityError(RuntimeError):
    """A weight file's sha256 is not the expected one, or there is nothing to check it against."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


RECORDS_DIR = "weights-sha256"


def records_dir(data_dir: Path | None = None) -> Path:
    """The owner-only folder of trust-on-first-use records (default: the process-wide data dir's)."""
    if data_dir is None:
        from cxr_agent.settings import get_settings

        data_dir = get_settings().data_dir
    return Path(data_dir).expanduser() / RECORDS_DIR


def sidecar(path: Path, data_dir: Path | None = None) -> Path:
    """Where the trust-on-first-use hash of ``path`` is kept: ``<data_dir>/weights-sha256/<name>.sha256``.

    Keyed by the file's name (release files have unique names): a weights directory that moves
    keeps its records, and a different file of the same name elsewhere fails its check (safe)."""
    return records_dir(data_dir) / f"{Path(path).name}{SIDECAR_SUFFIX}"


def recorded_hash(path: Path) -> str | None:
    """The hash recorded for the file (first token of its record, sha256sum's format), or None."""
    try:
        text = sidecar(path).read_text().strip()
    except OSError:
        return None
    token = text.split()[0].lower() if text else ""
    return token if len(token) == 64 and all(c in "0123456789abcdef" for c in token) else None


def record_hash(path: Path, digest: str | None = None) -> str:
    """Record the file's hash in the data dir (``sha256sum`` format), owner-only."""
    digest = digest or sha256_file(path)
    record = sidecar(path)
    folder = record.parent
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    tmp = folder / f".{record.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{digest}  {Path(path).expanduser().absolute()}\n".encode())
    finally:
        os.close(fd)
    os.replace(tmp, record)
    return digest


def expected_hash(path: Path, pinned: str | None) -> tuple[str | None, str]:
    """(expected hash, where it came from): the pin wins; else the recorded sidecar; else (None, '')."""
    if pinned:
        return pinned.lower(), "pinned in tools/catalogue.py"
    rec = recorded_hash(path)
    return (rec, f"recorded at first download in {sidecar(path)}") if rec else (None, "")


def _check(path: Path, actual: str, pinned: str | None, fix: str) -> None:
    expected, source = expected_hash(path, pinned)
    if expected is None:
        raise WeightsIntegrityError(
            f"weight file {path} has no known sha256: none is published for it and none was recorded "
            f"for it in the data dir ({sidecar(path).parent}), so it is not loaded (unpickling an unknown "
            "file can run code). "
            f"Fix: {fix}"
        )
    if actual != expected:
        raise WeightsIntegrityError(
            f"weight file {path} failed its integrity check: expected sha256 {expected} ({source}), "
            f"actual sha256 {actual}. The file is corrupt, truncated or not the published one; it was not "
            f"loaded. Fix: {fix}"
        )


def verify_file(path: Path, pinned: str | None, *, fix: str) -> str:
    """Hash ``path`` and compare; returns the hash or raises WeightsIntegrityError naming the fix."""
    path = Path(path)
    actual = sha256_file(path)
    _check(path, actual, pinned, fix)
    return actual


def load_verified(path: Path, pinned: str | None, *, fix: str, weights_only: bool = True) -> Any:
    """``torch.load`` of a file whose bytes match the expected hash (checked on the same bytes).

    weights_only=True (tensors and plain containers only) is the default; pass False only for a
    file that is known to be a pickled module AND has just passed the hash check.
    """
    import torch

    path = Path(path)
    data = path.read_bytes()
    _check(path, sha256_bytes(data), pinned, fix)
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=weights_only)
