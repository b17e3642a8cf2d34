"""Wrong-patient guard: are two studies plausibly the same patient, from what de-identification kept?

Ingest keeps only the sex and a decade age band (tools/ingestion/deid.py), so the guard can refuse a clear
mismatch but can never prove a match; two uploads without those headers cannot be confirmed at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel

Verdict = Literal["consistent", "mismatch", "unconfirmed"]


class PatientCheck(BaseModel):
    verdict: Verdict
    reason: str


def _band_start(band: Any) -> int | None:
    text = str(band or "")
    digits = text.split("-")[0].rstrip("+")
    return int(digits) if digits.isdigit() else None


def same_patient(prior: Mapping[str, Any], current: Mapping[str, Any]) -> PatientCheck:
    """Compare two studies' de-identified metadata (``patient_sex``, ``patient_age``).

    A different sex is a mismatch. Age bands more than one decade apart are a mismatch; adjacent bands are
    not (a birthday may fall between the films, e.g. 59 then 60)."""
    sexes = prior.get("patient_sex"), current.get("patient_sex")
    ages = _band_start(prior.get("patient_age")), _band_start(current.get("patient_age"))
    if all(sexes) and sexes[0] != sexes[1]:
        return PatientCheck(verdict="mismatch", reason="the two studies' headers give a different patient sex")
    if None not in ages and abs(ages[0] - ages[1]) > 10:  # type: ignore[operator]
        return PatientCheck(verdict="mismatch", reason="the two studies' headers give age bands more than a "
                                                       "decade apart")
    if not all(sexes) and None in ages:
        return PatientCheck(verdict="unconfirmed", reason="no sex or age band is known for both studies "
                                                          "(images without DICOM headers)")
    return PatientCheck(verdict="consistent", reason="sex and age band do not contradict each other "
                                                     "(this cannot prove it is the same patient)")
