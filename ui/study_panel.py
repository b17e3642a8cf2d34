"""The left column: getting a study in (upload, PACS) and showing it with the turns' overlays.

One module for the study's side of the page, so what is loaded and what is drawn on it sit
together; the drawing itself is ui/overlays.py and the session bookkeeping ui/session.py.
"""

from __future__ import annotations

import hashlib
import html
from typing import Any

import streamlit as st

from cxr_agent.settings import Settings
from ui import session as S
from ui.overlays import UNKNOWN_SOURCE, SourcePalette, compose, load_heatmap
from ui.pacs import can_push, open_from_pacs, push_to_pacs
from ui.remote import is_remote

UPLOAD_TYPES_HELP = "PNG, JPEG or DICOM (.dcm; files without an extension are accepted too)."
DISPLAY_MAX_SIDE = 900
# The uploader's own limit, within ingestion's 512 MB (tools/ingestion/loader.py MAX_FILE_BYTES). Not 512
# itself: Streamlit prints 512 MB as "1GB per file", a limit the app does not have.
UPLOAD_LIMIT_MB = 500


def upload_section(state, graph: Any = None) -> None:
    uploaded = st.file_uploader(  # shows and enforces UPLOAD_LIMIT_MB, whatever the server option says
        "Upload a chest radiograph", type=None, key=S.uploader_key(state), help=UPLOAD_TYPES_HELP,
        max_upload_size=UPLOAD_LIMIT_MB,
    )
    if uploaded is not None:
        with st.spinner("Reading the study..."):  # a message sent meanwhile waits for it (S.ingest_upload)
            loader = graph.load_study if is_remote(graph) else None  # remote: the server stores it
            error = S.ingest_upload(state, uploaded.name, uploaded.getvalue(), loader=loader)
        if error:
            st.error(error, icon=":material/block:")


def pacs_section(state, settings: Settings, graph: Any = None) -> None:
    """Open a study from the PACS (DICOMweb) and, on request only, send the SR back."""
    if not settings.pacs_url:
        return
    with st.expander("Open from PACS", icon=":material/cloud_download:"):
        with st.form("cxr_pacs_open", border=False):
            uid = st.text_input("Study Instance UID", key="cxr_pacs_uid", placeholder="1.2.840...")
            if st.form_submit_button("Open") and uid.strip():
                with st.spinner("Pulling the study from the PACS..."):
                    loader = graph.load_study if is_remote(graph) else None  # remote: the server stores it
                    error = open_from_pacs(state, settings, uid, loader=loader)
                if error:
                    st.error(error, icon=":material/block:")
        if can_push(state) and st.button("Send SR to PACS", key="cxr_pacs_push", icon=":material/cloud_upload:"):
            with st.spinner("Sending the DICOM SR..."):
                ok, message = push_to_pacs(state, settings)
            (st.success if ok else st.error)(message)


def image_section(state, graph: Any = None) -> None:
    study = state[S.K_STUDY]
    if study is None:
        st.caption("No study loaded yet. Upload a PNG, JPEG or DICOM chest radiograph to begin.")
        return
    boxes, heats, latest = S.collect_overlays(state[S.K_TURNS], study.id)
    nonce = state[S.K_UPLOADER_NONCE]
    shown_boxes, shown_heats, alpha = boxes, [], 0.45
    if boxes or heats:
        c1, c2 = st.columns(2)
        box_keys = [b.key for b in boxes]
        heat_keys = [h.key for h in heats]
        sig = hashlib.sha1("|".join(box_keys + heat_keys).encode()).hexdigest()[:8]
        with c1:
            picked = st.multiselect(
                "Boxes", box_keys, default=[k for k in box_keys if k in latest] or box_keys,
                key=f"cxr_boxes_{nonce}_{sig}",
            )
        with c2:
            picked_h = st.multiselect(
                "Heatmaps", heat_keys, default=[k for k in heat_keys if k in latest][:1],
                key=f"cxr_heats_{nonce}_{sig}",
            )
        if picked_h:
            alpha = st.slider("Heatmap opacity", 0.1, 0.9, 0.45, 0.05, key=f"cxr_alpha_{nonce}")
        shown_boxes = [b for b in boxes if b.key in picked]
        shown_heats = [h for h in heats if h.key in picked_h]
    arrays, missing = [], []
    for h in shown_heats:
        arr = graph.load_heatmap(h.uri) if is_remote(graph) else load_heatmap(h.uri)
        if arr is None:
            missing.append(h.key)
        else:
            arrays.append(arr)
    # the graph's tool roles, as the latest turn record carries them (none yet: the built-ins')
    palette = SourcePalette.from_roles(next((t.roles for t in reversed(state[S.K_TURNS]) if t.roles), None))
    img = compose(study.pixels, boxes=shown_boxes, heatmaps=arrays, max_side=DISPLAY_MAX_SIDE, alpha=alpha,
                  palette=palette)
    caption = f"{state[S.K_STUDY_NAME] or 'study'} - overlays: {len(shown_boxes)} box(es), {len(arrays)} heatmap(s)"
    st.image(img, caption=caption, width="stretch")
    if missing:
        st.caption(f"Heatmap file unavailable for: {', '.join(missing)}")
    if shown_boxes:
        legend = " ".join(
            f"<span style='color:rgb{palette.color(s)}'>■</span> {html.escape(s or UNKNOWN_SOURCE)}"
            for s in sorted({b.source for b in shown_boxes})
        )
        st.markdown(f"Box colours: {legend}", unsafe_allow_html=True)
    with st.container(border=True):
        st.markdown("**Study (de-identified)**")
        facts = S.study_facts(study)
        st.markdown("  \n".join(f"{k}: **{v}**" for k, v in facts.items()))
