"""A PACS over DICOMweb (dicomweb-client): find a study's radiograph, pull it, push an SR back.

QIDO-RS finds the study and its CR/DX instances (frontal views first), WADO-RS retrieves the chosen
instance, and the bytes go through ``tools.ingestion.loader.load_study`` exactly like an upload (size limits,
refusals, de-identification): nothing else of the header is kept. The reference to the PACS instance
(study / series / SOP Instance UIDs) is returned to the caller for this session only; the product
never stores it. At push time ``source_metadata`` fetches the instance's header again (WADO-RS
metadata, no pixels) so the SR can carry the patient and study modules it must reference, and the
header is dropped once the SR is sent. ``find_prior`` / ``pull_with_prior`` find the same patient's latest
earlier CR/DX study by QIDO (the patient id is used for the query, never returned) and bring back both
studies' dates and the caller's patient keys, for ordering the pair there and then.

Every failure is a ``PacsError`` subclass with a message for a clinician that never quotes a UID or
header value: unreachable server, 401/403, study not found, no CR/DX radiograph, other HTTP errors.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests

from cxr_agent.settings import Settings, get_settings
from tools.ingestion.dicom_io import RADIOGRAPH_MODALITIES
from tools.ingestion.study import Study, check_size
from tools.interop.quiet import header_values_muted

log = logging.getLogger(__name__)
T = TypeVar("T")

_TAG = {"StudyInstanceUID": "0020000D", "SeriesInstanceUID": "0020000E", "SOPInstanceUID": "00080018",
        "Modality": "00080060", "ViewPosition": "00185101", "InstanceNumber": "00200013",
        "NumberOfFrames": "00280008", "SOPClassUID": "00080016", "Rows": "00280010", "Columns": "00280011",
        "StudyDate": "00080020", "StudyTime": "00080030", "PatientID": "00100020",
        "IssuerOfPatientID": "00100021", "ModalitiesInStudy": "00080061"}
_FRONTAL = ("PA", "AP")


class PacsError(RuntimeError):
    """Base of every PACS failure; the message is meant for a clinician and quotes no UID."""


class PacsNotConfigured(PacsError):
    """No DICOMweb URL is set."""


class PacsUnreachable(PacsError):
    """Connection refused, DNS failure or timeout."""


class PacsAuthError(PacsError):
    """The PACS answered 401 (no or wrong credentials) or 403 (not allowed)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class StudyNotFound(PacsError):
    """No study with that Study Instance UID on the PACS."""


class NoRadiograph(PacsError):
    """The study holds no single-frame CR/DX instance (only CT, SR, ... or nothing)."""


@dataclass(frozen=True)
class InstanceRef:
    """Where an instance lives on the PACS. Held in memory for the session; never stored by us."""

    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str | None = None
    view: str | None = None
    rows: int | None = None  # from QIDO when the PACS returns it: the size is checked before download
    columns: int | None = None


@dataclass(frozen=True)
class PulledStudy:
    """A radiograph pulled from the PACS: the de-identified Study (as from an upload) and its source."""

    study: Study
    source: InstanceRef


@dataclass(frozen=True)
class PulledPair:
    """A study pulled with the same patient's latest earlier CR/DX study (``prior``: None when there is none).

    ``taken``: (prior, current) acquisition times from QIDO, and ``keys``: their patient keys (the caller's
    hash of PatientID + IssuerOfPatientID). Both are for ordering and checking the pair now, in memory: the
    de-identified studies keep neither, and the patient id itself never leaves the client."""

    current: PulledStudy
    prior: PulledStudy | None
    taken: tuple[datetime | None, datetime | None] = (None, None)
    keys: tuple[str | None, str | None] = (None, None)


PatientKey = Callable[[Any, Any], "str | None"]  # (PatientID, IssuerOfPatientID) -> a salted hash


def _taken(item: dict[str, Any]) -> datetime | None:
    """StudyDate (+ StudyTime) of a QIDO result; None when absent or malformed."""
    day = str(_value(item, "StudyDate") or "").strip()
    clock = str(_value(item, "StudyTime") or "").strip().split(".")[0].replace(":", "")
    try:
        when = datetime.strptime(day, "%Y%m%d")
    except ValueError:
        return None
    if len(clock) >= 4 and clock[:6].isdigit():
        clock = clock[:6].ljust(6, "0")
        when = when.replace(hour=min(int(clock[:2]), 23), minute=min(int(clock[2:4]), 59),
                            second=min(int(clock[4:6]), 59))
    return when


@dataclass(frozen=True)
class PushedReport:
    """Where the SR went (UIDs the PACS now holds) and how many findings it carries."""

    study_uid: str
    series_uid: str
    sop_uid: str
    findings: int


def _value(item: dict[str, Any], keyword: str) -> Any:
    values = (item.get(_TAG[keyword]) or {}).get("Value") or [None]
    return values[0]


def valid_uid(uid: str) -> bool:
    """A DICOM UID: dot-separated digits, at most 64 characters."""
    parts = uid.split(".") if uid else []
    return 0 < len(uid) <= 64 and len(parts) > 1 and all(p.isdigit() and (p == "0" or p[0] != "0") for p in parts)


_TLS_WARNED = threading.Event()


def check_pacs_transport(url: str, settings: Settings) -> None:
    """Refuse a plain-http PACS on another machine (images and reports would cross the network
    unencrypted) unless ``pacs_allow_insecure_remote``; log once per process that TLS verification is off."""
    from tools.vlm.backends.transport import is_loopback

    try:
        parts = urlsplit(url)
        scheme, host, _port = parts.scheme.lower(), parts.hostname or "", parts.port
    except ValueError:
        return  # not a usable address at all: the client's own check names it (_bad_url)
    if scheme == "http" and host and not is_loopback(host) and not settings.pacs_allow_insecure_remote:
        raise PacsNotConfigured(
            "The PACS is on another machine but CXR_AGENT_PACS_URL is plain http://, so images, reports and "
            "credentials would cross the network unencrypted. Use https://, or set "
            "CXR_AGENT_PACS_ALLOW_INSECURE_REMOTE=true if the network itself is trusted and encrypted."
        )
    if scheme == "https" and not settings.pacs_verify_tls and not _TLS_WARNED.is_set():
        _TLS_WARNED.set()  # once per process: requests' own per-request warning is muted with header values
        log.warning("PACS TLS certificate verification is OFF (CXR_AGENT_PACS_VERIFY_TLS=false): anyone on the "
                    "network path can impersonate the PACS. Turn it back on, or trust the PACS's CA instead.")


class PacsClient:
    """One DICOMweb server (settings.pacs_url) with the configured credentials."""

    def __init__(self, settings: Settings | None = None, *, url: str | None = None) -> None:
        self.settings = settings or get_settings()
        self.url = (url or self.settings.pacs_url or "").rstrip("/")
        if not self.url:
            raise PacsNotConfigured(
                "No PACS is configured: set CXR_AGENT_PACS_URL to the DICOMweb root "
                "(e.g. http://pacs.example.org/dicom-web)."
            )
        s = self.settings
        check_pacs_transport(self.url, s)
        from dicomweb_client import DICOMwebClient

        session = requests.Session()
        if s.pacs_token is not None:
            session.headers["Authorization"] = f"Bearer {s.pacs_token.get_secret_value()}"
        elif s.pacs_username:
            session.auth = (s.pacs_username, s.pacs_password.get_secret_value() if s.pacs_password else "")
        session.verify = s.pacs_verify_tls
        try:
            self._client = DICOMwebClient(self.url, session=session, timeout=s.pacs_timeout_s)
        except ValueError:
            raise PacsNotConfigured(self._bad_url()) from None
        # dicomweb-client retries every failure 5 times with 1 s exponential backoff (~30 s for a refused
        # connection); 3 attempts from 0.2 s keep transient 503/429 recovery and fail fast when down.
        self._client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=200)

    # ------------------------------------------------------------------ errors
    def _bad_url(self) -> str:
        return (f"CXR_AGENT_PACS_URL ({self.url}) is not a usable DICOMweb address: expected "
                "http(s)://host[:port]/path, e.g. http://pacs.example.org:8042/dicom-web.")

    def _call(self, what: str, fn: Callable[[], T], *, not_found: PacsError | None = None) -> T:
        """Run one DICOMweb request, turning transport and HTTP failures into PacsError subclasses."""
        try:
            with header_values_muted():
                return fn()
        except (requests.ConnectionError, requests.Timeout) as exc:
            kind = "timed out" if isinstance(exc, requests.Timeout) else "could not be reached"
            raise PacsUnreachable(
                f"The PACS {kind} while trying to {what} (CXR_AGENT_PACS_URL={self.url}). "
                "Check the address, that the server is running and that this machine may connect to it."
            ) from None
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status == 401:
                raise PacsAuthError(
                    f"The PACS refused the credentials (401) while trying to {what}: set "
                    "CXR_AGENT_PACS_USERNAME / CXR_AGENT_PACS_PASSWORD or CXR_AGENT_PACS_TOKEN.", status
                ) from None
            if status == 403:
                raise PacsAuthError(
                    f"The PACS does not allow this account to {what} (403): ask its administrator for access.",
                    status,
                ) from None
            if status == 404 and not_found is not None:
                raise not_found from None
            raise PacsError(f"The PACS answered HTTP {status} while trying to {what}.") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema):
            raise PacsNotConfigured(self._bad_url()) from None
        except requests.RequestException as exc:
            raise PacsError(f"The PACS request failed while trying to {what} ({type(exc).__name__}).") from None
        except ValueError as exc:  # dicomweb-client's own parse errors (malformed multipart / JSON)
            raise PacsError(f"The PACS sent an answer that could not be read while trying to {what} ({exc}).") from None

    # ------------------------------------------------------------------ QIDO-RS
    def find_radiographs(self, study_uid: str) -> list[InstanceRef]:
        """The study's single-frame CR/DX instances, frontal (PA/AP) first, then by series and number."""
        if not valid_uid(study_uid):
            raise StudyNotFound("That is not a DICOM Study Instance UID (digits and dots, at most 64 characters).")
        missing = StudyNotFound("The PACS has no study with that Study Instance UID.")
        studies = self._call("search for the study", lambda: self._client.search_for_studies(
            search_filters={"StudyInstanceUID": study_uid}), not_found=missing)
        if not any(_value(s, "StudyInstanceUID") == study_uid for s in studies):
            raise missing
        items = self._call("list the study's images", lambda: self._client.search_for_instances(
            study_uid, fields=["Modality", "ViewPosition", "NumberOfFrames", "InstanceNumber", "SOPClassUID", "Rows", "Columns"]),
            not_found=missing)
        found: list[tuple[tuple[Any, ...], InstanceRef]] = []
        modalities: set[str] = set()
        for it in items:
            modality = str(_value(it, "Modality") or "").upper()
            modalities.add(modality or "?")
            frames = _value(it, "NumberOfFrames")
            if modality not in RADIOGRAPH_MODALITIES or (frames is not None and int(frames) > 1):
                continue
            view = str(_value(it, "ViewPosition") or "").upper() or None
            rows, cols = _value(it, "Rows"), _value(it, "Columns")
            ref = InstanceRef(study_uid, str(_value(it, "SeriesInstanceUID")), str(_value(it, "SOPInstanceUID")),
                              modality, view, int(rows) if rows else None, int(cols) if cols else None)
            key = (view not in _FRONTAL, ref.series_uid, int(_value(it, "InstanceNumber") or 0), ref.sop_uid)
            found.append((key, ref))
        if not found:
            holds = ", ".join(sorted(modalities)) if modalities else "no instances"
            raise NoRadiograph(
                f"The study holds no single-frame CR/DX radiograph (it holds: {holds}); "
                "only projection chest radiographs can be read."
            )
        return [ref for _, ref in sorted(found, key=lambda kv: kv[0])]

    def _study_entry(self, study_uid: str) -> dict[str, Any]:
        """The study's QIDO entry with its date and patient identifiers (held only by the caller, in memory)."""
        if not valid_uid(study_uid):
            raise StudyNotFound("That is not a DICOM Study Instance UID (digits and dots, at most 64 characters).")
        missing = StudyNotFound("The PACS has no study with that Study Instance UID.")
        studies = self._call("search for the study", lambda: self._client.search_for_studies(
            search_filters={"StudyInstanceUID": study_uid},
            fields=["StudyDate", "StudyTime", "PatientID", "IssuerOfPatientID"]), not_found=missing)
        entry = next((s for s in studies if _value(s, "StudyInstanceUID") == study_uid), None)
        if entry is None:
            raise missing
        return entry

    def find_prior(self, study_uid: str) -> str | None:
        """The Study Instance UID of the same patient's latest CR/DX study taken before this one, or None.

        QIDO by PatientID (and IssuerOfPatientID when the study has one); the id is used for the query only.
        A study without a date, or the patient's without one, cannot be ordered and is not picked."""
        entry = self._study_entry(study_uid)
        pid, issuer, taken = _value(entry, "PatientID"), _value(entry, "IssuerOfPatientID"), _taken(entry)
        if not pid or taken is None:
            return None
        filters = {"PatientID": pid, **({"IssuerOfPatientID": issuer} if issuer else {})}
        found = self._call("search for the patient's earlier studies", lambda: self._client.search_for_studies(
            search_filters=filters, fields=["StudyDate", "StudyTime", "ModalitiesInStudy", "IssuerOfPatientID"]))
        earlier: list[tuple[datetime, str]] = []
        for item in found:
            uid, when = str(_value(item, "StudyInstanceUID") or ""), _taken(item)
            values = (item.get(_TAG["ModalitiesInStudy"]) or {}).get("Value") or []
            modalities = {str(m).upper() for m in values}
            if (uid == study_uid or when is None or when >= taken or not modalities & set(RADIOGRAPH_MODALITIES)
                    or (issuer and _value(item, "IssuerOfPatientID") not in (None, issuer))):
                continue
            earlier.append((when, uid))
        return max(earlier)[1] if earlier else None

    def pull_with_prior(self, study_uid: str, *, key: PatientKey,
                        loader: Callable[..., Study] | None = None) -> PulledPair:
        """Pull the study and the same patient's latest earlier CR/DX study (``find_prior``), each ingested like
        an upload; their dates and patient keys (``key(PatientID, IssuerOfPatientID)``) come back beside them."""
        entry = self._study_entry(study_uid)
        current = self.pull(study_uid, loader=loader)
        prior_uid = self.find_prior(study_uid)
        current_key = key(_value(entry, "PatientID"), _value(entry, "IssuerOfPatientID"))
        if prior_uid is None:
            return PulledPair(current=current, prior=None, taken=(None, _taken(entry)), keys=(None, current_key))
        prior_entry = self._study_entry(prior_uid)
        prior = self.pull(prior_uid, loader=loader)
        return PulledPair(current=current, prior=prior, taken=(_taken(prior_entry), _taken(entry)),
                          keys=(key(_value(prior_entry, "PatientID"), _value(prior_entry, "IssuerOfPatientID")),
                                current_key))

    # ------------------------------------------------------------------ WADO-RS
    def retrieve_bytes(self, ref: InstanceRef) -> bytes:
        """The instance as a DICOM Part 10 file, in its stored transfer syntax.

        A size the PACS reported above the upload limits is refused before anything is downloaded."""
        if ref.rows and ref.columns:
            check_size(ref.columns, ref.rows, self.settings.max_image_pixels)
        ds = self._call("retrieve the image", lambda: self._client.retrieve_instance(
            ref.study_uid, ref.series_uid, ref.sop_uid, media_types=(("application/dicom", "*"),)),
            not_found=StudyNotFound("The image was removed from the PACS while it was being read."))
        buf = io.BytesIO()
        with header_values_muted():
            ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()

    def source_metadata(self, ref: InstanceRef) -> Any:
        """The instance's header (no pixels) as a pydicom Dataset: for writing an SR that references it.

        Identifying by nature (patient and study modules): use it, then drop it; never store or log it."""
        from pydicom import Dataset

        meta = self._call("read the image's header", lambda: self._client.retrieve_instance_metadata(
            ref.study_uid, ref.series_uid, ref.sop_uid),
            not_found=StudyNotFound("The source image is no longer on the PACS."))
        with header_values_muted():
            return Dataset.from_json(meta, bulk_data_uri_handler=lambda *_a: b"")

    def _default_loader(self) -> Callable[..., Study]:
        """load_study with these settings (pixel cap, burned-in text policy, decode slots), as for uploads."""
        from tools.ingestion.loader import load_study

        return functools.partial(load_study, settings=self.settings)

    def pull(self, study_uid: str, *, loader: Callable[..., Study] | None = None) -> PulledStudy:
        """QIDO + WADO the study's first frontal radiograph and ingest it like an upload."""
        loader = loader or self._default_loader()
        ref = self.find_radiographs(study_uid)[0]
        data = self.retrieve_bytes(ref)
        return PulledStudy(study=loader(data, filename=None), source=ref)

    def locate(self, study_uid: str, study_id: str, *, loader: Callable[..., Study] | None = None) -> InstanceRef:
        """The study's radiograph whose de-identified pixels are ``study_id`` (the image a conversation read).

        Pull stores no reference, so push finds the instance again: candidates in the pull order, each
        decoded through the loader and compared by pixel hash; a different image is never reported on."""
        loader = loader or self._default_loader()
        for ref in self.find_radiographs(study_uid):
            if loader(self.retrieve_bytes(ref), filename=None).id == study_id:
                return ref
        raise NoRadiograph("The conversation's image is not in that PACS study: push the report to the study it "
                           "was pulled from (for an uploaded image, download the SR instead).")

    # ------------------------------------------------------------------ STOW-RS
    def store(self, dataset: Any) -> None:
        """STOW-RS one dataset (the SR) into its study on the PACS."""
        self._call("store the report", lambda: self._client.store_instances([dataset], dataset.StudyInstanceUID))

    def compared_prior(self, study_uid: str, prior_study_id: str) -> InstanceRef | None:
        """The radiograph a comparison read as the prior of ``study_uid``: the patient's latest earlier CR/DX
        study, when its de-identified pixels are ``prior_study_id`` (found again by pixel hash); else None."""
        try:
            prior_uid = self.find_prior(study_uid)
            return self.locate(prior_uid, prior_study_id) if prior_uid is not None else None
        except PacsError:
            return None

    def push_report(self, ref: InstanceRef, *, decisions: Any, evidence: Any = (), report_text: str = "",
                    demo: bool = False, prior: InstanceRef | None = None, changes: Any = ()) -> PushedReport:
        """Build the SR against the source's header (fetched again now, then dropped) and STOW-RS it.
        ``prior`` (the radiograph a comparison read as the prior) and ``changes``: the change since it."""
        from tools.interop.sr import SRSourceError, build_sr

        try:
            with header_values_muted():
                sr = build_sr(self.source_metadata(ref), decisions=decisions, evidence=evidence,
                              report_text=report_text, demo=demo,
                              prior=self.source_metadata(prior) if prior is not None else None,
                              changes=changes if prior is not None else ())
        except SRSourceError as exc:
            raise PacsError(f"No SR was sent: {exc}.") from None
        self.store(sr)
        return PushedReport(study_uid=sr.StudyInstanceUID, series_uid=sr.SeriesInstanceUID,
                            sop_uid=sr.SOPInstanceUID, findings=len(decisions))


def pull_study(study_uid: str, settings: Settings | None = None) -> PulledStudy:
    """The Python entry point: the de-identified Study of a PACS study's radiograph, and its source reference."""
    return PacsClient(settings).pull(study_uid)
