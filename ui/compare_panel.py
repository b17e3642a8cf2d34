"""Comparing with a prior on the page: which study is the prior, and the two films side by side.

Dates are dropped when a file is loaded, so when a conversation holds several studies the reader says
which one is the prior (the control's choice goes with each message as ``prior_study_id``; left on its
default, the study read before the current one is the prior). After a comparison turn the prior and
the current study are drawn next to each other, each with the boxes and heatmaps its own turns made.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import streamlit as st

from ui import session as S
from ui.overlays import SourcePalette, compose, load_heatmap
from ui.remote import is_remote
from ui.resources import studies
from ui.turn import TurnResult

K_PRIOR = "cxr_prior_study_id"  # the reader's choice of prior: a study id of this conversation, or None
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
