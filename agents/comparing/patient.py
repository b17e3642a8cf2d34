"""Wrong-patient guard: are two studies plausibly the same patient, from what de-identification kept?

Ingest keeps only the sex and a decade age band (tools/ingestion/deid.py), so the guard can refuse a clear
mismatch but can never prove a match; two uploads without those headers cannot be confirmed at all.
When studies are read with their headers (two files loaded together, a PACS pull with its prior), each
also gets a **patient key**: a salted hash of PatientID + IssuerOfPatientID under the conversation's own
random salt (``patient_salt``: made once per thread, kept in that thread's state only, never in the shared
study and never logged). Every key made in one conversation compares with every other, so a study loaded
later can be checked against any earlier one; another conversation's keys for the same patient differ, and
without the salt no key can be recomputed from a guessed id. The id itself is dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel

SALT_BYTES = 32
MIN_SALT_BYTES = 16

Verdict = Literal["consistent", "mismatch", "unconfirmed"]


class PatientCheck(BaseModel):
    verdict: Verdict
    reason: str


def _band_start(band: Any) -> int | None:
    text = str(band or "")
    digits = text.split("-")[0].rstrip("+")
    return int(digits) if digits.isdigit() else None


def patient_key(patient_id: Any, issuer: Any, *, salt: bytes) -> str | None:
    """A salted hash of PatientID + IssuerOfPatientID (None without a PatientID), under a conversation's salt.

    HMAC-SHA256 keyed by the salt: without the salt, the key cannot be recomputed from a guessed id."""
    pid = str(patient_id or "").strip()
    if not pid:
        return None
    if len(salt) < MIN_SALT_BYTES:
        raise ValueError(f"a patient-key salt needs at least {MIN_SALT_BYTES} random bytes, got {len(salt)}")
    text = f"{str(issuer or '').strip()}\x00{pid}".encode()
    return hmac.new(salt, text, hashlib.sha256).hexdigest()


def salt_bytes(value: Any) -> bytes:
    """A ``patient_salt`` (hex text) as bytes; ValueError naming ``patient_salt`` when it is not one."""
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) < MIN_SALT_BYTES:
        raise ValueError(f"invalid graph input: patient_salt must be at least {MIN_SALT_BYTES} random bytes as "
                         f"hex text, not a {type(value).__name__} of {len(str(value))} characters")
    return raw


def keep_salt(left: Any, right: Any) -> str:
    """The ``patient_salt`` channel's reducer: set once per thread, then kept. A different salt later raises
    ValueError (keys made under it would not compare with the thread's)."""
    if right is None or right == "":
        return left or ""
    salt_bytes(right)
    if left and not hmac.compare_digest(str(left), str(right)):
        raise ValueError("invalid graph input: this conversation already has its patient_salt; read it from the "
                         "thread's state (thread_salt) instead of making another")
    return str(right)


def thread_salt(values: Mapping[str, Any] | None, pending: str | None = None) -> tuple[bytes, dict[str, str]]:
    """The conversation's salt, and the graph input that records it when the thread has none yet (send it
    with the keys made under it). ``pending``: a salt already made for this thread but not yet sent."""
    held = (values or {}).get("patient_salt")
    if held:
        return salt_bytes(held), {}
    fresh = pending or secrets.token_hex(SALT_BYTES)
    return salt_bytes(fresh), {"patient_salt": fresh}


def same_patient(prior: Mapping[str, Any], current: Mapping[str, Any],
                 keys: tuple[str | None, str | None] = (None, None)) -> PatientCheck:
    """Compare two studies' de-identified metadata (``patient_sex``, ``patient_age``) and, where both have
    one, their patient keys (``patient_key`` with the same salt).

    Different patient keys, or a different sex, are a mismatch. Age bands more than one decade apart are a
    mismatch; adjacent bands are not (a birthday may fall between the films, e.g. 59 then 60). The same
    key with no contradiction in sex and age is the strongest "consistent" there is."""
    if all(keys) and not hmac.compare_digest(str(keys[0]), str(keys[1])):
        return PatientCheck(verdict="mismatch", reason="the two studies' headers give different patient ids")
    sexes = prior.get("patient_sex"), current.get("patient_sex")
    ages = _band_start(prior.get("patient_age")), _band_start(current.get("patient_age"))
    if all(sexes) and sexes[0] != sexes[1]:
        return PatientCheck(verdict="mismatch", reason="the two studies' headers give a different patient sex")
    if None not in ages and abs(ages[0] - ages[1]) > 10:  # type: ignore[operator]
        return PatientCheck(verdict="mismatch", reason="the two studies' headers give age bands more than a "
                                                       "decade apart")
    if all(keys):
        return PatientCheck(verdict="consistent", reason="the two studies' headers give the same patient id "
                                                         "(compared as salted hashes); sex and age band do not contradict it")
    if not all(sexes) and None in ages:
        return PatientCheck(verdict="unconfirmed", reason="no sex or age band is known for both studies "
                                                          "(images without DICOM headers)")
    return PatientCheck(verdict="consistent", reason="sex and age band do not contradict each other "
                                                     "(this cannot prove it is the same patient)")
