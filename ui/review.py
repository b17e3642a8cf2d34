"""The Review and sign-off panel: the study's findings as an editable table beside the report text.

Pure parts (``table_rows``, ``apply_rows``, ``reviewer_for``) are tested without Streamlit; the panel
lays them out. Actions are applied to a fresh copy of the saved draft only when the reader saves or
signs, so Streamlit's reruns never add audit lines. The reviewer is the logged-in user (OIDC); without
a login a typed name records the review, unverified.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from agents.review import Review, Reviewer, ReviewError, ReviewStore, SignedReview, open_review
from knowledge.vocabulary import FINDINGS, display_name, normalize
from ui import session as S

NO_ACTION = "—"
ACTIONS = (NO_ACTION, "accept", "reject", "present", "absent", "uncertain")  # the last three: change to
K_SIGNED = "cxr_review_signed"


def table_rows(review: Review) -> list[dict[str, Any]]:
    """One editable row per finding: flagged ones first."""
    rows = []
    for it in sorted(review.items, key=lambda i: (not i.flagged, display_name(i.finding))):
        action = {"accepted": "accept", "rejected": "reject", "added": it.final_status.value,
                  "changed": it.final_status.value}.get(it.action or "", NO_ACTION)
        rows.append({"id": it.finding, "finding": display_name(it.finding), "AI": it.ai_status.value if it.ai_status else "(added)",
                     "confidence": it.ai_confidence, "flagged": "needs review" if it.flagged else "",
                     "action": action, "note": it.note})
    return rows


def apply_rows(review: Review, rows: Sequence[Mapping[str, Any]], added: Sequence[str] = ()) -> Review:
    """Apply the table's actions (only those that differ from the review) and the added findings."""
    for row in rows:
        fid = str(row["id"])
        it = review.item(fid)
        action, note = str(row.get("action") or NO_ACTION), str(row.get("note") or "")
        current = {"accepted": "accept", "rejected": "reject"}.get(it.action or "", it.status.value if it.status else "")
        if action == NO_ACTION or (action == current and note == it.note):
            continue
        if action == "accept":
            review.accept(fid, note)
        elif action == "reject":
            review.reject(fid, note)
        else:
            review.change(fid, action, note)
    present = {it.finding for it in review.items}
    names = {display_name(f): f for f in FINDINGS}
    for name in added:
        fid = names.get(name) or normalize(name)
        if fid and fid not in present:
            review.add(fid)
    return review


def reviewer_for(user: Any, typed_name: str) -> Reviewer | None:
    """The logged-in user, else the typed name (unverified), else None."""
    if logged_in(user):
        try:
            return Reviewer.from_oidc(user)
        except ReviewError:
            pass
    return Reviewer.typed(typed_name) if typed_name.strip() else None


def logged_in(user: Any) -> bool:
    try:
        return bool(user is not None and user.is_logged_in)
    except Exception:  # noqa: BLE001 - no [auth] section configured: nobody is logged in
        return False


def _user() -> Any:
    try:
        return st.user
    except Exception:  # noqa: BLE001 - no [auth] configured: nobody is logged in
        return None


def review_section(state: Any, settings: Any, graph: Any) -> None:
    """The panel (shown once the conversation has findings on a study)."""
    found = S.latest_with_evidence(state[S.K_TURNS])
    if graph is None or found is None or not found[1].decisions:
        return
    thread_id = state[S.K_THREAD]
    with st.expander("Review and sign-off", expanded=False, icon=":material/verified:"):
        user = _user()
        name = ""
        if not logged_in(user):
            name = st.text_input("Your name (no login: the review is recorded but never verified)",
                                 key="cxr_review_name")
        reviewer = reviewer_for(user, name)
        if reviewer is None:
            st.caption("Log in (or type your name) to review the findings.")
            return
        try:
            review = open_review(graph, thread_id, reviewer=reviewer, settings=settings)
        except ReviewError as exc:
            st.caption(str(exc))
            return
        # widget keys stay the same across reruns until a version is signed (a fresh draft gets a new id
        # on every rerun, so the id cannot key them)
        key = f"{thread_id}_{review.study_id[:12]}_{review.version}"
        st.caption(f"Version {review.version} · reviewer: {reviewer.label}"
                   + (f" · supersedes {review.supersedes[:8]}" if review.supersedes else ""))
        rows = st.data_editor(
            table_rows(review), hide_index=True, width="stretch", key=f"cxr_review_table_{key}",
            disabled=["finding", "AI", "confidence", "flagged"],
            column_config={"id": None,"action": st.column_config.SelectboxColumn("action", options=list(ACTIONS), required=True),
                           "note": st.column_config.TextColumn("note", max_chars=300)})
        added = st.multiselect("Add findings the tools missed (present)",
                               [display_name(f) for f in FINDINGS if f not in {i.finding for i in review.items}],
                               key=f"cxr_review_add_{key}")
        text = st.text_area("Report", value=review.report_text, height=160, key=f"cxr_review_text_{key}")
        save, sign = st.columns(2)
        store = ReviewStore.for_settings(settings)
        try:
            if save.button("Save draft", key="cxr_review_save"):
                apply_rows(review, rows, added).edit_report(text)
                store.save_draft(review)
                st.success("Draft saved.")
            if sign.button("Sign", type="primary", key="cxr_review_sign"):
                apply_rows(review, rows, added).edit_report(text)
                signed = review.sign()
                store.save_signed(signed)
                state[K_SIGNED] = signed
                st.success(f"Signed by {reviewer.label}" + ("" if signed.verified else " (not verified: no login)"))
        except ReviewError as exc:
            st.error(str(exc))
        signed = state.get(K_SIGNED)
        if isinstance(signed, SignedReview) and signed.thread_id == thread_id:
            _downloads(state, settings, signed)


def _downloads(state: Any, settings: Any, signed: SignedReview) -> None:
    import io

    from agents.review.outputs import fhir_bundle, sr_pair
    from tools.interop.fhir import fhir_json
    from tools.interop.sr import deidentified_source

    study = state.get(S.K_STUDY)
    if study is None or study.id != signed.study_id:
        return
    _, ver = sr_pair(signed, deidentified_source(study), demo=settings.is_demo)
    buf = io.BytesIO()
    ver.save_as(buf, enforce_file_format=True)
    a, b, c = st.columns(3)
    a.download_button("Signed SR (DICOM)", buf.getvalue(), file_name="signed-sr.dcm", key="cxr_review_sr")
    b.download_button("Signed report (FHIR)", fhir_json(fhir_bundle(signed, demo=settings.is_demo)),
                      file_name="signed-fhir.json", key="cxr_review_fhir")
    from ui.pacs import K_PACS_SOURCE

    source = state.get(K_PACS_SOURCE)
    if signed.verified and source and source[0] == signed.study_id and c.button("Send to the PACS", key="cxr_review_push"):
        from agents.review.outputs import push_verified
        from tools.interop.dicomweb import PacsClient, PacsError

        try:
            earlier = ReviewStore.for_settings(settings).pushed_srs(signed.thread_id, signed.study_id)
            push_verified(signed, PacsClient(settings), source[1].study_uid, demo=settings.is_demo,
                          earlier_ai_srs=earlier)
            st.success("The verified SR is on the PACS beside the AI's SR.")
        except PacsError as exc:
            st.error(str(exc))
