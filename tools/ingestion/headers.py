"""What two files loaded together can tell about their order, before de-identification drops it.

Ingest keeps no date and no patient id (tools/ingestion/deid.py). When two studies are loaded at once, the
caller reads these facts from each file's header first, orders the pair and hashes the ids
(agents/comparing/pair.py, agents/comparing/patient.py), then drops them: nothing here is stored or logged.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

_DATES = (("StudyDate", "StudyTime"), ("AcquisitionDate", "AcquisitionTime"), ("ContentDate", "ContentTime"),
          ("SeriesDate", "SeriesTime"))
_TAGS = [kw for pair in _DATES for kw in pair] + ["PatientID", "IssuerOfPatientID"]


@dataclass(frozen=True)
class HeaderFacts:
    """When the image was taken and whose it is, as the header says; all None for a non-DICOM file.
    Identifying: use at once, never keep."""

    taken: datetime | None = None
    patient_id: str | None = None
    issuer: str | None = None


def _when(day: Any, clock: Any) -> datetime | None:
    d = re.sub(r"[^0-9]", "", str(day or ""))
    if len(d) != 8:
        return None
    t = re.sub(r"[^0-9]", "", str(clock or "").split(".")[0])[:6]
    t = t.ljust(6, "0") if len(t) >= 2 else "000000"
    try:
        return datetime.strptime(d + t, "%Y%m%d%H%M%S")
    except ValueError:
        try:
            return datetime.strptime(d, "%Y%m%d")
        except ValueError:
            return None


def header_facts(data: bytes) -> HeaderFacts:
    """The first usable date (study, acquisition, content, series; with its time) and the patient id and
    issuer of a DICOM file's header; empty facts for anything that is not a readable DICOM."""
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True, specific_tags=_TAGS)
    except Exception:  # noqa: BLE001 - not DICOM, or a header pydicom cannot read: nothing to order by
        return HeaderFacts()

    def value(keyword: str) -> Any:
        try:
            return ds.get(keyword)
        except Exception:  # noqa: BLE001 - a malformed value is converted lazily and raises here
            return None

    taken = next((w for day, clock in _DATES if (w := _when(value(day), value(clock))) is not None), None)
    pid = str(value("PatientID") or "").strip() or None
    issuer = str(value("IssuerOfPatientID") or "").strip() or None
    return HeaderFacts(taken=taken, patient_id=pid, issuer=issuer)
