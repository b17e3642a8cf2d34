"""The Review and sign-off panel: the study's findings as an editable table beside the report text.

Pure parts (``table_rows``, ``apply_rows``, ``reviewer_for``) are tested without Streamlit; the panel
lays them out. Actions are applied to a fresh copy of the saved draft only when the reader saves or
signs, so Streamlit's reruns never add audit lines. The reviewer is the logged-in user (OIDC); without
a login a typed name records the review, unverified. With a graph server (remote mode) the review
lives there, with its thread (``ServerReviews``: server/reviews.py's routes), and the server names
the reviewer from the identity it authenticated. A study compared with a prior gets a second table, its
change rows (finding, before, now, change, sources, flag), each accepted, rejected or set to another value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import streamlit as st

from agents.review import Review, Reviewer, ReviewError, ReviewStore, SignedReview, apply_edits, open_review
from agents.review.edits import ACTIONS, CHANGE_ACTIONS, NO_ACTION, current_action, current_change_action
from knowledge.vocabulary import FINDINGS, display_name
from ui import session as S
from ui.remote import is_remote, server_thread_id

K_SIGNED = "cxr_review_signed"
__all__ = ["ACTIONS", "CHANGE_ACTIONS", "NO_ACTION", "change_table_rows", "LocalReviews", "ServerReviews", "apply_rows", "review_section", "reviewer_for",
           "table_rows"]


def table_rows(review: Review) -> list[dict[str, Any]]:
    """One editable row per finding: flagged ones first."""
    rows = []
    for it in sorted(review.items, key=lambda i: (not i.flagged, display_name(i.finding))):
        action = current_action(review, it.finding)
        rows.append({"id": it.finding, "finding": display_name(it.finding), "AI": it.ai_status.value if it.ai_status else "(added)",
                     "confidence": it.ai_confidence, "flagged": "needs review" if it.flagged else "",
                     "action": action, "note": it.note})
    return rows


def change_table_rows(review: Review) -> list[dict[str, Any]]:
    """One editable row per change since the prior: flagged ones first."""
    rows = []
    for c in sorted(review.changes, key=lambda c: (not c.flagged, display_name(c.finding))):
        sources = ", ".join([*c.agreeing, *(f"not {s}" for s in c.disagreeing)])
        rows.append({"id": c.finding, "finding": display_name(c.finding),
                     "before": c.before.value if c.before else "", "now": c.now.value if c.now else "",
                     "change": c.ai_change.replace("_", " "), "sources": sources,
                     "flagged": "needs review" if c.flagged else "",
                     "action": current_change_action(review, c.finding), "note": c.note})
    return rows


def apply_rows(review: Review, rows: Sequence[Mapping[str, Any]], added: Sequence[str] = (),
               change_rows: Sequence[Mapping[str, Any]] = ()) -> Review:
    """Apply the tables' actions (only those that differ from the review) and the added findings."""
    return apply_edits(review, _wire_rows(rows), added, change_rows=_wire_rows(change_rows))


def _wire_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    return [{"id": str(r["id"]), "action": str(r.get("action") or NO_ACTION), "note": str(r.get("note") or "")}
            for r in rows]


class LocalReviews:
    """Reviews kept by this app, under its data dir (the graph runs in this process)."""

    def __init__(self, graph: Any, settings: Any, reviewer: Reviewer) -> None:
        self.graph, self.settings, self.reviewer = graph, settings, reviewer
        self.store = ReviewStore.for_settings(settings)

    def open(self, thread_id: str) -> Review:
        return open_review(self.graph, thread_id, reviewer=self.reviewer, settings=self.settings)

    def save(self, review: Review, rows: Sequence[Mapping[str, Any]], added: Sequence[str], text: str,
             change_rows: Sequence[Mapping[str, Any]] = ()) -> Review:
        apply_edits(review, _wire_rows(rows), added, text, _wire_rows(change_rows))
        self.store.save_draft(review)
        return review

    def sign(self, review: Review, rows: Sequence[Mapping[str, Any]], added: Sequence[str], text: str,
             change_rows: Sequence[Mapping[str, Any]] = ()) -> SignedReview:
        signed = apply_edits(review, _wire_rows(rows), added, text, _wire_rows(change_rows)).sign()
        self.store.save_signed(signed)
        return signed


class ServerReviews:
    """Reviews kept by the graph server with their thread; the server names the reviewer (its
    authenticated user), ``typed_name`` only counts when it knows no person behind this app's token."""

    def __init__(self, agent: Any, typed_name: str = "") -> None:
        self.agent, self.typed_name = agent, typed_name.strip()

    def _call(self, method: str, thread_id: str, suffix: str = "", body: dict[str, Any] | None = None) -> Any:
        path = f"/cxr/threads/{server_thread_id(thread_id)}/review{suffix}"
        try:
            if body is None:
                r = self.agent.http.request(method, path, params={"typed_name": self.typed_name} if self.typed_name
                                            else None)
            else:
                r = self.agent.http.request(method, path, json={**body, "typed_name": self.typed_name or None})
        except httpx.HTTPError as exc:
            raise ReviewError(f"the graph server did not answer ({type(exc).__name__}); try again") from None
        if r.status_code == 404:
            raise ReviewError("the graph server holds no such conversation for you: ask about an image first")
        try:
            data = r.json()
        except ValueError:
            data = {}
        if r.status_code >= 400:
            raise ReviewError(str(data.get("detail") or f"the graph server refused the review (HTTP {r.status_code})"))
        return data

    def open(self, thread_id: str) -> Review:
        return Review.model_validate(self._call("GET", thread_id)["review"])

    def _body(self, review: Review, rows: Sequence[Mapping[str, Any]], added: Sequence[str], text: str,
              change_rows: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        return {"study_id": review.study_id, "rows": _wire_rows(rows), "added": list(added), "report_text": text,
                "change_rows": _wire_rows(change_rows)}

    def save(self, review: Review, rows: Sequence[Mapping[str, Any]], added: Sequence[str], text: str,
             change_rows: Sequence[Mapping[str, Any]] = ()) -> Review:
        return Review.model_validate(self._call("PUT", review.thread_id, body=self._body(review, rows, added,
                                                                                             text, change_rows))["review"])

    def sign(self, review: Review, rows: Sequence[Mapping[str, Any]], added: Sequence[str], text: str,
             change_rows: Sequence[Mapping[str, Any]] = ()) -> SignedReview:
        data = self._call("POST", review.thread_id, "/sign", self._body(review, rows, added, text, change_rows))
        return SignedReview.model_validate(data["signed"]).check()


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
        reviews: LocalReviews | ServerReviews = (ServerReviews(graph, name) if is_remote(graph)
                                                  else LocalReviews(graph, settings, reviewer))
        try:
            review = reviews.open(thread_id)
        except ReviewError as exc:
            st.caption(str(exc))
            return
        # widget keys stay the same across reruns until a version is signed (a fresh draft gets a new id
        # on every rerun, so the id cannot key them)
        key = f"{thread_id}_{review.study_id[:12]}_{review.version}"
        st.caption(f"Version {review.version} · reviewer: {review.reviewer.label}"
                   + (f" · supersedes {review.supersedes[:8]}" if review.supersedes else ""))
        rows = st.data_editor(
            table_rows(review), hide_index=True, width="stretch", key=f"cxr_review_table_{key}",
            disabled=["finding", "AI", "confidence", "flagged"],
            column_config={"id": None,"action": st.column_config.SelectboxColumn("action", options=list(ACTIONS), required=True),
                           "note": st.column_config.TextColumn("note", max_chars=300)})
        changes: Any = []
        if review.changes:
            st.caption(f"Change since the prior study {(review.prior_study_id or '')[:12]}: accept, reject (no change "
                       "signed) or set another change value; a flagged change needs an action before signing.")
            changes = st.data_editor(
                change_table_rows(review), hide_index=True, width="stretch", key=f"cxr_review_changes_{key}",
                disabled=["finding", "before", "now", "change", "sources", "flagged"],
                column_config={"id": None, "action": st.column_config.SelectboxColumn(
                    "action", options=list(CHANGE_ACTIONS), required=True),
                               "note": st.column_config.TextColumn("note", max_chars=300)})
        added = st.multiselect("Add findings the tools missed (present)",
                               [display_name(f) for f in FINDINGS if f not in {i.finding for i in review.items}],
                               key=f"cxr_review_add_{key}")
        text = st.text_area("Report", value=review.report_text, height=160, key=f"cxr_review_text_{key}")
        save, sign = st.columns(2)
        try:
            if save.button("Save draft", key="cxr_review_save"):
                reviews.save(review, rows, added, text, changes)
                st.success("Draft saved.")
            if sign.button("Sign", type="primary", key="cxr_review_sign"):
                signed = reviews.sign(review, rows, added, text, changes)
                state[K_SIGNED] = signed
                st.success(f"Signed by {signed.reviewer.label}" + ("" if signed.verified else " (not verified: no login)"))
        except ReviewError as exc:
            st.error(str(exc))
        signed = state.get(K_SIGNED)
        if isinstance(signed, SignedReview) and signed.thread_id in (thread_id, server_thread_id(thread_id)):
            _downloads(state, settings, signed)


def _downloads(state: Any, settings: Any, signed: SignedReview) -> None:
    import io

    from agents.review.outputs import fhir_bundle, sr_pair
    from tools.interop.fhir import fhir_json
    from tools.interop.sr import deidentified_source

    study = state.get(S.K_STUDY)
    if study is None or study.id != signed.study_id:
        return
    prior = None
    if signed.changes and signed.prior_study_id:  # the SR references the prior the changes are against
        from tools.ingestion.store import StudyNotFound, StudyStore

        try:
            prior = deidentified_source(StudyStore.from_settings(settings).get(signed.prior_study_id))
        except (StudyNotFound, OSError):
            st.caption("The prior study is no longer stored here: the signed SR, which must reference it, cannot be "
                       "written; the FHIR report can.")
    ver = None
    if prior is not None or not signed.changes:
        _, ver = sr_pair(signed, deidentified_source(study), demo=settings.is_demo, prior=prior)
    a, b, c = st.columns(3)
    if ver is not None:
        buf = io.BytesIO()
        ver.save_as(buf, enforce_file_format=True)
        a.download_button("Signed SR (DICOM)", buf.getvalue(), file_name="signed-sr.dcm", key="cxr_review_sr",
                            on_click="ignore")
    b.download_button("Signed report (FHIR)", fhir_json(fhir_bundle(signed, demo=settings.is_demo)),
                      file_name="signed-fhir.json", key="cxr_review_fhir", on_click="ignore")
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
        except (PacsError, ReviewError) as exc:
            st.error(str(exc))
