"""The UI's PACS actions, free of Streamlit: open a study from the PACS, send the SR back when asked.

Opening pulls the study's first frontal CR/DX image over DICOMweb and hands its bytes to the same
ingest as an upload (ui.session.ingest_upload -> tools.ingestion.loader.load_study), so limits, refusals and
de-identification are identical. The PACS reference (UIDs) is kept only in this browser session's
memory, beside the study id it produced, so the push button knows where the image came from; it is
never written to disk, the study store or the graph. Push is a button, never automatic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from cxr_agent.settings import Settings
from ui import session as S
from ui.exports import latest_findings_turn

log = logging.getLogger(__name__)

K_PACS_SOURCE = "cxr_pacs_source"  # (study id, InstanceRef) of the study opened from the PACS, memory only


def _client(settings: Settings, client: Any) -> Any:
    if client is not None:
        return client
    from tools.interop.dicomweb import PacsClient

    return PacsClient(settings)


def open_from_pacs(state: MutableMapping[str, Any], settings: Settings, study_uid: str, *,
                   client: Any = None, loader: Callable[..., Any] | None = None) -> str | None:
    """Pull the study's radiograph and make it the session's study; None on success, else the message.

    ``loader``: as for an upload (``ui.session.ingest_upload``); in remote mode the graph server's
    ``load_study``, so the server stores the pulled study like an uploaded one."""
    from tools.interop.dicomweb import PacsError

    study_uid = (study_uid or "").strip()
    try:
        pacs = _client(settings, client)
        ref = pacs.find_radiographs(study_uid)[0]
        data = pacs.retrieve_bytes(ref)
    except PacsError as exc:
        return str(exc)
    error = S.ingest_upload(state, "pacs.dcm", data, loader=loader)
    if error:
        return error
    state[K_PACS_SOURCE] = (state[S.K_STUDY].id, ref)
    return None


def can_push(state: MutableMapping[str, Any]) -> bool:
    """A push makes sense only for the study opened from the PACS, once a turn has findings on it."""
    source = state.get(K_PACS_SOURCE)
    study = state.get(S.K_STUDY)
    turn = latest_findings_turn(state.get(S.K_TURNS) or [])
    return bool(source and study is not None and source[0] == study.id and turn is not None
                and (turn.study_id in (None, study.id)))


def _record_pushed(state: MutableMapping[str, Any], settings: Settings, study_id: str, pushed: Any) -> None:
    """Remember the AI SR's UIDs with the conversation: a verified SR signed later references it."""
    from agents.review import ReviewStore
    from tools.interop.signed import SRRef

    ReviewStore.for_settings(settings).record_pushed_sr(state[S.K_THREAD], study_id, SRRef.of(pushed))


def push_to_pacs(state: MutableMapping[str, Any], settings: Settings, *, client: Any = None) -> tuple[bool, str]:
    """STOW-RS the latest findings as an SR into the source study; (ok, message for the page)."""
    from tools.interop.dicomweb import PacsError

    if not can_push(state):
        return False, "Open a study from the PACS and ask for a report first; only that study can receive the SR."
    from agents.turn.comparison import recorded_changes

    _, ref = state[K_PACS_SOURCE]
    turn = latest_findings_turn(state[S.K_TURNS])
    compared = recorded_changes((t.cxr for t in state[S.K_TURNS]), turn.study_id or state[S.K_STUDY].id)
    try:
        pacs = _client(settings, client)
        # after a comparison: the SR references the prior radiograph on the PACS and carries each change
        prior = pacs.compared_prior(ref.study_uid, compared.prior_study_id) if compared is not None else None
        pushed = pacs.push_report(ref, decisions=turn.decisions, evidence=turn.evidence, report_text=turn.reply,
                                  demo=settings.is_demo, prior=prior,
                                  changes=compared.changes if compared is not None and prior is not None else ())
    except PacsError as exc:
        return False, str(exc)
    except Exception as exc:  # noqa: BLE001 - the page says it failed, never a traceback
        log.warning("SR push failed (%s)", type(exc).__name__)
        return False, f"The SR could not be built or sent ({type(exc).__name__})."
    _record_pushed(state, settings, turn.study_id or state[S.K_STUDY].id, pushed)
    return True, (f"Sent a DICOM SR with {pushed.findings} finding(s) to the PACS study. "
                  "It is marked UNVERIFIED: a clinician must review it.")
