"""Per-browser-session state: the thread id, the study, the turns, the pending upload.

Everything lives in the mapping Streamlit gives each session (``st.session_state``), so two
browser sessions never share a conversation or a study; only the compiled graph and the
models are shared (via ``st.cache_resource`` in the app). Functions take the mapping as an
argument so they can be tested with a plain dict.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import replace
from typing import Any

from tools.ingestion.study import Study, StudyError
from ui.evidence_table import as_evidence
from ui.overlays import OverlayBox, OverlayHeatmap
from ui.turn import TurnResult

log = logging.getLogger(__name__)

K_THREAD = "cxr_thread_id"
K_TURNS = "cxr_turns"
K_STUDY = "cxr_study"
K_STUDY_NAME = "cxr_study_name"  # the page's label for the study ("Study 2 · PA"), never the file name
K_STUDY_COUNT = "cxr_study_count"
K_STUDY_LABELS = "cxr_study_labels"  # study id -> the page's label, for every study of the conversation
K_PENDING = "cxr_pending_image"
K_UPLOAD_SIG = "cxr_upload_sig"
K_UPLOAD_ERROR = "cxr_upload_error"
K_UPLOADER_NONCE = "cxr_uploader_nonce"
K_INBOX = "cxr_inbox"  # messages sent, not yet handed to the worker (the chat input's callback fills it)
K_SENT_AT = "cxr_sent_at"  # time.monotonic() of the latest message sent (an upload may still be on its way)
K_WORKER = "cxr_worker"  # this session's TurnWorker (ui/worker.py)


def new_thread_id() -> str:
    return f"ui-{uuid.uuid4().hex}"


def init_session(state: MutableMapping[str, Any]) -> None:
    """Give a fresh session its own thread id and empty conversation (idempotent)."""
    if K_THREAD not in state:
        state[K_THREAD] = new_thread_id()
    state.setdefault(K_TURNS, [])
    state.setdefault(K_STUDY, None)
    state.setdefault(K_STUDY_NAME, None)
    state.setdefault(K_PENDING, None)
    state.setdefault(K_UPLOAD_SIG, None)
    state.setdefault(K_UPLOAD_ERROR, None)
    state.setdefault(K_UPLOADER_NONCE, 0)
    state.setdefault(K_INBOX, [])
    state.setdefault(K_STUDY_LABELS, {})


def new_conversation(state: MutableMapping[str, Any]) -> None:
    """New thread id; forget the study, the turns and the uploaded file (the uploader resets too)."""
    state[K_THREAD] = new_thread_id()
    state[K_TURNS] = []
    state[K_STUDY] = None
    state[K_STUDY_NAME] = None
    state[K_PENDING] = None
    state[K_UPLOAD_SIG] = None
    state[K_UPLOAD_ERROR] = None
    state[K_UPLOADER_NONCE] = int(state.get(K_UPLOADER_NONCE, 0)) + 1  # uploader, popovers, overlay pickers
    state[K_INBOX] = []
    state[K_STUDY_COUNT] = 0  # the next upload is "Study 1" again
    state[K_STUDY_LABELS] = {}


def open_conversation(state: MutableMapping[str, Any], thread_id: str, turns: list[TurnResult],
                      study: Study | None, study_count: int, labels: dict[str, str] | None = None) -> None:
    """Show a stored conversation: its thread, turns and last study (nothing pending: the graph has it)."""
    new_conversation(state)
    state[K_THREAD] = thread_id
    state[K_TURNS] = turns
    state[K_STUDY] = study
    state[K_STUDY_COUNT] = study_count
    state[K_STUDY_NAME] = study_label(study_count, study) if study is not None else None
    state[K_STUDY_LABELS] = dict(labels or {})
    if study is not None:
        state[K_STUDY_LABELS][study.id] = state[K_STUDY_NAME]


def submit_prompt(state: MutableMapping[str, Any], key: str) -> None:
    """The chat input's ``on_submit`` callback: keep the message until the worker has it.

    Callbacks run before the script body, so the text is kept even if a rerun (an upload's) stops the
    body before it hands the message on; every message sent is kept, in order, never replaced."""
    text = state.get(key)
    if text:
        state[K_INBOX].append(text)
        state[K_SENT_AT] = time.monotonic()


def uploader_key(state: MutableMapping[str, Any]) -> str:
    return f"cxr_uploader_{state.get(K_UPLOADER_NONCE, 0)}"


def upload_signature(name: str, data: bytes) -> str:
    return hashlib.sha256(name.encode() + b"\0" + data).hexdigest()


def ingest_upload(
    state: MutableMapping[str, Any],
    name: str,
    data: bytes,
    *,
    loader: Callable[..., Study] | None = None,
) -> str | None:
    """Ingest an uploaded file once (re-runs with the same file are no-ops).

    On success the study becomes the session's current study and is queued for the next turn
    (``take_study_inputs``); returns None. On refusal returns the clinician-readable StudyError
    message and keeps the previous study; on an unexpected failure returns a short generic message.

    The file counts as ingested (its signature recorded) only once it has been read. Streamlit's
    fast reruns start the run of a chat message sent mid-ingest while this one is still decoding;
    that run must then read the file itself, never conclude from a half-done ingest that there is
    no image.
    """
    sig = upload_signature(name, data)
    if state.get(K_UPLOAD_SIG) == sig:
        return state.get(K_UPLOAD_ERROR)
    error = _ingest(state, name, data, loader)
    state[K_UPLOAD_ERROR] = error
    state[K_UPLOAD_SIG] = sig
    return error


def _ingest(state: MutableMapping[str, Any], name: str, data: bytes, loader: Callable[..., Study] | None) -> str | None:
    if loader is None:
        from tools.ingestion.loader import load_study as loader  # lazy: pulls in the decoders
    try:
        study = _load(loader, data, name, state.get(K_THREAD))
    except StudyError as exc:  # the file name (often a patient's name) is never echoed on the page
        return f"The uploaded file was not loaded: {exc}"
    except Exception as exc:  # never show a traceback for a bad file
        log.warning("unexpected ingest failure (%s)", type(exc).__name__)
        return (
            f"The uploaded file could not be read (unexpected {type(exc).__name__}). "
            "Try exporting it again as PNG, JPEG or DICOM."
        )
    state[K_STUDY] = study
    state[K_STUDY_COUNT] = int(state.get(K_STUDY_COUNT) or 0) + 1
    state[K_STUDY_NAME] = study_label(state[K_STUDY_COUNT], study)
    state.setdefault(K_STUDY_LABELS, {})[study.id] = state[K_STUDY_NAME]
    state[K_PENDING] = study.id  # an id, not the bytes: nothing raw is kept or sent
    return None


_VIEW_LABELS = {"PA": "PA", "AP": "AP", "LATERAL": "lateral"}


def study_label(number: int, study: Study) -> str:
    """The page's name for a study, "Study 2 · PA": a session counter and the view (a fixed
    vocabulary), never the uploaded file's name, which often carries the patient's name or MRN."""
    view = _VIEW_LABELS.get(study.view)
    return f"Study {number} · {view}" if view else f"Study {number}"


class StudyNotSaved(RuntimeError):
    """The study store could not take the uploaded study, so the turn is not run (nothing raw is
    ever sent to the graph instead: its checkpoints would keep it)."""


def take_study_inputs(state: MutableMapping[str, Any], store: Any = None) -> dict[str, Any]:
    """Graph inputs that hand a newly uploaded study to the next turn (empty when none is new).

    The already de-identified Study goes into the study store and only its id is sent, so the
    raw upload (a DICOM's header carries PHI) never reaches the graph's checkpoints. Raises
    ``StudyNotSaved`` (the study stays queued) when there is no usable store. Call
    ``restore_pending`` if the turn then fails, so the study is sent again next time.
    """
    pending = state.get(K_PENDING)
    study = state.get(K_STUDY)
    if pending is None or study is None:
        return {}
    if store is None:
        raise StudyNotSaved("the study store is not available, so the study was not sent; try again")
    try:
        study_id = _put(store, study, state.get(K_THREAD))
    except Exception as exc:  # noqa: BLE001 - disk full, permissions, quota: a typed, short message
        log.warning("study store unavailable (%s)", type(exc).__name__)
        raise StudyNotSaved(
            f"the study could not be saved ({type(exc).__name__}), so it was not sent; try again"
        ) from None
    state[K_PENDING] = None
    return {"study_id": study_id}


def _load(loader: Callable[..., Study], data: bytes, name: str, thread_id: Any) -> Study:
    """Decode the upload; a loader that also stores it (the graph server's) is told the conversation
    it is for, as ``_put`` tells the graph's own store."""
    import inspect

    try:
        takes_thread = "thread_id" in inspect.signature(loader).parameters
    except (TypeError, ValueError):
        takes_thread = False
    if takes_thread and isinstance(thread_id, str) and thread_id:
        return loader(data, filename=name, thread_id=thread_id)
    return loader(data, filename=name)


def _put(store: Any, study: Study, thread_id: Any) -> str:
    """Store the study for this conversation: the graph's own ``Studies`` records it as a pending upload of
    the thread, so forgetting another conversation on the same image keeps it (a remote store's
    upload already named the conversation to the server)."""
    from tools.ingestion.intake import Studies

    if isinstance(store, Studies) and isinstance(thread_id, str) and thread_id:
        return store.put(study, thread_id=thread_id)
    return str(store.put(study))


def restore_pending(state: MutableMapping[str, Any], pending: Any) -> None:
    """Queue the upload again after a failed turn."""
    if pending is not None and state.get(K_PENDING) is None:
        state[K_PENDING] = pending


_FACT_KEYS = (  # Study.metadata keys (already de-identified by tools/ingestion/loader.py) -> labels
    ("modality", "Modality"),
    ("body_part", "Body part"),
    ("photometric_interpretation", "Photometric"),
    ("bits_stored", "Bits stored"),
    ("pixel_spacing_mm", "Pixel spacing (mm)"),
    ("transfer_syntax", "Transfer syntax"),
    ("patient_age", "Age group"),
    ("patient_sex", "Sex"),
)


def study_facts(study: Study) -> dict[str, str]:
    """The de-identified facts shown beside the image (Study.metadata holds only safe fields)."""
    facts = {
        "View": study.view,
        "Size": f"{study.width} x {study.height} px",
        "Source format": study.source_format.upper(),
    }
    meta = study.metadata or {}
    for key, label in _FACT_KEYS:
        value = meta.get(key)
        if value not in (None, "", []) and label not in facts:
            if isinstance(value, list | tuple):
                value = " x ".join(f"{float(v):.3g}" if isinstance(v, int | float) else str(v) for v in value)
            facts[label] = str(value)
    facts.setdefault("Modality", "unknown" if study.source_format == "dicom" else "image file (no header)")
    if meta.get("inverted"):
        facts["Display"] = "inverted (MONOCHROME1)"
    redaction = meta.get("redaction")
    if isinstance(redaction, dict) and redaction.get("redacted"):  # tools.ingestion.redact
        facts["Burned-in text"] = f"redacted ({int(redaction.get('regions', 0))} region(s), OCR)"
    if meta.get("format_note"):
        facts["File"] = str(meta["format_note"])
    facts["Study id"] = study.id[:12]
    return facts


def collect_overlays(
    turns: Sequence[TurnResult], study_id: str | None
) -> tuple[list[OverlayBox], list[OverlayHeatmap], set[str]]:
    """Boxes and heatmaps from this study's turns (a later turn replaces the same finding and
    source), plus the keys the latest turn with overlays produced (shown by default)."""
    boxes: dict[str, OverlayBox] = {}
    heats: dict[str, OverlayHeatmap] = {}
    latest: set[str] = set()
    for t in turns:
        if study_id and t.cxr.get("study_id") and t.cxr.get("study_id") != study_id:
            continue
        turn_boxes: list[OverlayBox] = []
        for raw in t.cxr.get("boxes") or []:
            b = OverlayBox.from_any(raw)
            if b is not None:
                n = sum(1 for x in turn_boxes if x.base_key == b.base_key)
                turn_boxes.append(replace(b, index=n + 1))
        new_bases = {b.base_key for b in turn_boxes}
        boxes = {k: b for k, b in boxes.items() if b.base_key not in new_bases}  # the later turn replaces
        boxes.update({b.key: b for b in turn_boxes})
        turn_keys = {b.key for b in turn_boxes}
        made_by = _heatmap_sources(t)
        for raw in t.cxr.get("heatmaps") or []:
            h = OverlayHeatmap.from_any(raw)
            if h is not None and not h.source and h.uri in made_by:
                h = replace(h, source=made_by[h.uri])  # a reply from before heatmaps named their source: the evidence does
            if h is not None:
                heats[h.key] = h
                turn_keys.add(h.key)
        if turn_keys:
            latest = turn_keys
    return list(boxes.values()), list(heats.values()), latest


def _heatmap_sources(turn: TurnResult) -> dict[str, str]:
    """uri -> the tool whose Evidence carries that heatmap artifact, for this turn."""
    return {a.uri: e.tool for e in as_evidence(turn.evidence) for a in e.artifacts if a.kind == "heatmap" and a.uri}


def latest_with_evidence(turns: Sequence[TurnResult]) -> tuple[int, TurnResult] | None:
    """(1-based index, turn) of the most recent turn that has evidence or decisions."""
    for i in range(len(turns) - 1, -1, -1):
        if turns[i].evidence or turns[i].decisions:
            return i + 1, turns[i]
    return None
