"""Comparing with a prior on the page: two films loaded together, which study is the prior, and the two
films side by side.

Dates are dropped when a file is loaded. Two films loaded together are ordered from their headers then
(the interval in days and patient keys, salted with the conversation's own salt, go to the conversation with
the next message about the current film, as ``pairs``); the prior is read in full first. Otherwise, when a conversation holds several
studies, the reader says which one is the prior (the control's choice goes with each message as
``prior_study_id``; left on its default, the study read before the current one is the prior). After a
comparison turn the two films are drawn next to each other, each with the boxes and heatmaps its own
turns made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

import streamlit as st

from agents.comparing.pair import ordered_pair
from agents.comparing.patient import patient_key, thread_salt
from tools.ingestion.headers import header_facts
from tools.ingestion.study import Study, StudyError
from ui import session as S
from ui.overlays import SourcePalette, compose, load_heatmap
from ui.remote import is_remote
from ui.resources import studies
from ui.turn import TurnResult

K_PRIOR = "cxr_prior_study_id"  # the reader's choice of prior: a study id of this conversation, or None
K_PAIR_SIG = "cxr_pair_sig"  # the two files last loaded together, and what loading them said
K_PAIR_NOTE = "cxr_pair_note"
K_QUEUED = "cxr_pair_queued"  # the current film, waiting for the prior's read to be sent first
K_PAIR_NEXT = "cxr_pair_next"  # {current study id: StudyPair dump}, sent with the next message about it
K_SALT = "cxr_pair_salt"  # (thread id, salt) made for a conversation that has none yet, sent with its pairs
PRIOR_READ = "Write a report"  # the prior is read in full, so that every finding's change can be decided
PAIR_HELP = ("Two films of one patient, in any order. DICOM files are ordered by their dates, read now and "
             "then dropped; the prior is read first. For files without dates, the first is taken as the prior.")
PAIR_MAX_SIDE = 520
READ_BEFORE = "the study read before the current one"


def prior_options(state: Mapping[str, Any]) -> dict[str, str]:
    """Study id -> page label of the conversation's studies other than the current one, oldest first."""
    current = getattr(state.get(S.K_STUDY), "id", None)
    labels: dict[str, str] = dict(state.get(S.K_STUDY_LABELS) or {})
    return {sid: label for sid, label in labels.items() if sid != current}


def prior_input(state: Mapping[str, Any]) -> dict[str, str]:
    """The graph input naming the reader's prior, if they chose one that is still another study of theirs."""
    chosen = state.get(K_PRIOR)
    return {"prior_study_id": chosen} if chosen and chosen in prior_options(state) else {}


def prior_control(state: MutableMapping[str, Any]) -> None:
    """A choice of prior, shown once the conversation holds another study besides the current one."""
    options = prior_options(state)
    if not options:
        return
    if state.get(K_PRIOR) not in options:
        state[K_PRIOR] = None
    st.selectbox("Prior study (for comparisons)", [None, *options], key=K_PRIOR,
                 format_func=lambda sid: READ_BEFORE if sid is None else options[sid],
                 help="Dates are removed when a file is loaded, so the order is yours: questions such as "
                      "'Is it worse than before?' compare the current study with this one.")


def latest_comparison(turns: Sequence[TurnResult]) -> dict[str, Any] | None:
    """The comparison payload of the latest turn that compared two studies, else None."""
    for turn in reversed(turns):
        cmp = (turn.cxr or {}).get("comparison")
        if isinstance(cmp, dict) and cmp.get("compared") and cmp.get("prior_study_id") and cmp.get("study_id"):
            return cmp
    return None


def _film(state: Mapping[str, Any], graph: Any, study_id: str) -> Any:
    current = state.get(S.K_STUDY)
    if current is not None and current.id == study_id:
        return current
    getter = getattr(studies(graph), "get", None)
    try:
        return getter(study_id) if getter is not None else None
    except Exception:  # noqa: BLE001 - a study gone from the store (retention): said on the page
        return None


def side_by_side(state: Mapping[str, Any], graph: Any = None) -> None:
    """The latest comparison's two films next to each other, prior left, each with its own overlays."""
    turns: list[TurnResult] = state.get(S.K_TURNS) or []
    cmp = latest_comparison(turns)
    if cmp is None:
        return
    labels: dict[str, str] = dict(state.get(S.K_STUDY_LABELS) or {})
    palette = SourcePalette.from_roles(next((t.roles for t in reversed(turns) if t.roles), None))
    st.markdown("**Compared: prior and current**")
    for column, role, sid in zip(st.columns(2), ("Prior", "Current"), (cmp["prior_study_id"], cmp["study_id"]),
                                 strict=True):
        with column:
            name = f"{role} · {labels.get(sid, sid[:12])}"
            film = _film(state, graph, sid)
            if film is None:
                st.caption(f"{name}: the image is no longer available here.")
                continue
            boxes, heats, latest = S.collect_overlays(turns, sid)
            shown = [h for h in heats if h.key in latest][:1]
            arrays = [a for a in ((graph.load_heatmap(h.uri) if is_remote(graph) else load_heatmap(h.uri))
                                  for h in shown) if a is not None]
            st.image(compose(film.pixels, boxes=boxes, heatmaps=arrays, max_side=PAIR_MAX_SIDE, palette=palette),
                     caption=f"{name} - {len(boxes)} box(es), {len(arrays)} heatmap(s)", width="stretch")


def _adopt(state: MutableMapping[str, Any], study: Study) -> None:
    """Make ``study`` the page's study, sent with the next message (as an upload is)."""
    state[S.K_STUDY] = study
    state[S.K_STUDY_COUNT] = int(state.get(S.K_STUDY_COUNT) or 0) + 1
    state[S.K_STUDY_NAME] = S.study_label(state[S.K_STUDY_COUNT], study)
    state.setdefault(S.K_STUDY_LABELS, {})[study.id] = state[S.K_STUDY_NAME]
    state[S.K_PENDING] = study.id


def thread_values(state: Mapping[str, Any], graph: Any) -> Mapping[str, Any]:
    """The page's conversation as the graph holds it (empty for a new one, or a graph that cannot say)."""
    getter = getattr(graph, "get_state", None)
    if getter is None or not state.get(S.K_THREAD):
        return {}
    try:
        return getter({"configurable": {"thread_id": state[S.K_THREAD]}}).values or {}
    except Exception:  # noqa: BLE001 - a thread not stored yet, or a server that did not answer: none held
        return {}


def _salt(state: MutableMapping[str, Any], values: Mapping[str, Any] | None) -> bytes:
    """The conversation's patient-key salt: the thread's, else one made for it and kept until it is sent."""
    thread = state.get(S.K_THREAD)
    made = state.get(K_SALT)
    salt, recorded = thread_salt(values, made[1] if made and made[0] == thread else None)
    if recorded:
        state[K_SALT] = (thread, recorded["patient_salt"])
    return salt


def load_pair(state: MutableMapping[str, Any], files: Sequence[tuple[str, bytes]],
              loader: Callable[..., Study] | None = None, *, values: Mapping[str, Any] | None = None,
              remote: Any = None) -> str:
    """Load two films together: order them from their headers, queue the prior's full read, and keep the
    current film for the next message with the pair's interval and patient keys (made under the salt of the
    conversation, whose state is ``values``). With a graph server (``remote``), the server orders them and
    keeps the pair in the conversation itself. Returns what to tell the reader; on a refused file nothing changes."""
    if remote is not None:
        return _load_remote_pair(state, files, remote)
    if loader is None:
        from tools.ingestion.loader import load_study as loader
    salt = _salt(state, values)
    read = []
    for name, data in files:
        facts = header_facts(data)
        try:
            study = loader(data, filename=name)
        except StudyError as exc:  # the file name (often a patient's name) is never echoed
            return f"The two films were not loaded: {exc}"
        read.append((study.id, facts.taken, patient_key(facts.patient_id, facts.issuer, salt=salt), study))
    if read[0][0] == read[1][0]:
        return "The two files hold the same image: choose the prior and the current film."
    pair = ordered_pair(read[0][:3], read[1][:3], thread_keys=True)
    first, second = (read[0], read[1]) if pair is None or pair.prior_study_id == read[0][0] else (read[1], read[0])
    return _queue(state, first[3], second[3], pair.model_dump() if pair else None,
                  pair.interval_days if pair else None)


def _load_remote_pair(state: MutableMapping[str, Any], files: Sequence[tuple[str, bytes]], remote: Any) -> str:
    """Both films to the graph server, which orders them and holds the pair (its keys too) in the conversation."""
    try:
        films, pair = remote.load_pair(list(files), state[S.K_THREAD])
    except StudyError as exc:
        return f"The two films were not loaded: {exc}"
    if films[0].id == films[1].id:
        return "The two files hold the same image: choose the prior and the current film."
    first, second = (films[1], films[0]) if pair and pair["prior_study_id"] == films[1].id else (films[0], films[1])
    return _queue(state, first, second, None, pair["interval_days"] if pair else None)


def _queue(state: MutableMapping[str, Any], prior: Study, current: Study, pair: dict[str, Any] | None,
           days: int | None) -> str:
    """Make the prior the page's study with its full read queued; the current film waits for the next message
    (with ``pair`` to send, when the page made it)."""
    _adopt(state, prior)
    state[S.K_INBOX].append(PRIOR_READ)
    state[K_QUEUED] = {"prior": prior.id, "study": current, "pair": pair}
    if days is None:  # no order from the headers
        return ("The files carry no dates to order them by: the first is read as the prior. If it is the other, "
                "name the prior under 'Prior study' before comparing.")
    return (f"Ordered by their headers: the prior was taken {days} day{'s' if days != 1 else ''} before the current "
            "film (the dates are not kept). The prior is read first; then ask, e.g. 'Is it worse than before?'.")


def comparison_inputs(state: MutableMapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Graph inputs a message adds for comparing: the reader's prior and, for the first message about a film
    loaded with its prior, the pair. Once the prior's read is sent, the current film becomes the page's study."""
    out: dict[str, Any] = prior_input(state)
    queued = state.get(K_QUEUED)
    if queued and inputs.get("study_id") == queued["prior"]:
        state[K_QUEUED] = None
        _adopt(state, queued["study"])
        if queued["pair"]:
            state[K_PAIR_NEXT] = {queued["study"].id: queued["pair"]}
    elif state.get(K_PAIR_NEXT) and inputs.get("study_id") in state[K_PAIR_NEXT]:
        out["pairs"] = state.pop(K_PAIR_NEXT)
        made = state.get(K_SALT)
        if made and made[0] == state.get(S.K_THREAD):  # the salt its keys were made under (kept once set)
            out["patient_salt"] = made[1]
    return out


def two_film_section(state: MutableMapping[str, Any], graph: Any = None) -> None:
    """An uploader for a prior and a current film loaded together."""
    from ui.study_panel import UPLOAD_LIMIT_MB

    files = st.file_uploader("Or two films of one patient (prior and current)", type=None, accept_multiple_files=True,
                             key=f"cxr_pair_uploader_{state.get(S.K_UPLOADER_NONCE, 0)}", help=PAIR_HELP,
                             max_upload_size=UPLOAD_LIMIT_MB)
    if not files:
        return
    if len(files) != 2:
        st.warning(f"Choose exactly two files, the prior and the current film ({len(files)} chosen).")
        return
    named = [(f.name, f.getvalue()) for f in files]
    sig = hashlib.sha256("".join(S.upload_signature(n, d) for n, d in named).encode()).hexdigest()
    if state.get(K_PAIR_SIG) != sig:
        with st.spinner("Reading the two films..."):
            state[K_PAIR_NOTE] = (load_pair(state, named, remote=graph) if is_remote(graph)
                                  else load_pair(state, named, values=thread_values(state, graph)))
        state[K_PAIR_SIG] = sig
    st.caption(state.get(K_PAIR_NOTE) or "")
