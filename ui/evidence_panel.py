"""The evidence section under the page: the latest evidence turn's table, tool line and prior reports.

The table's data is built by ui/evidence_table.py (pure, tested without Streamlit); this module
only lays it out, with the turn record's tool roles deciding the columns.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from knowledge.markdown import escape
from knowledge.vocabulary import display_name
from ui import session as S
from ui.evidence_table import build_rows, prior_reports, style_conflicts, to_dataframe, tool_summary

TABLE_ROWS_SHOWN = 10  # rows visible at once; more scroll within the table
TABLE_ROW_PX = 35  # Streamlit's default data-grid row height


def evidence_section(state, graph: Any = None) -> None:
    found = S.latest_with_evidence(state[S.K_TURNS])
    if found is None:
        return
    idx, turn = found
    st.subheader("Evidence")
    st.caption(f"Turn {idx}: \u201c{turn.user_text[:120]}\u201d")
    study = state[S.K_STUDY]
    if study is not None and turn.study_id and turn.study_id != study.id:
        st.caption(":material/history: This evidence is about the previously loaded study; ask again for the new one.")
    rows = build_rows(turn.evidence, turn.decisions, verifications=turn.verifications, roles=turn.roles)
    if rows:
        # Flagged rows come first (build_rows); the rest scroll inside a fixed-height table, so the
        # panel never grows past the screen and no row is cut off.
        st.dataframe(style_conflicts(to_dataframe(rows)), hide_index=True, width="stretch",
                     height=TABLE_ROW_PX * (min(len(rows), TABLE_ROWS_SHOWN) + 1) + 3, key="cxr_evidence_table")
        n_conf = sum(1 for r in rows if r["_conflict"])
        if n_conf:
            st.warning(f"{n_conf} finding(s) where the image sources disagree: flagged for human review.", icon=":material/warning:")
    else:
        st.caption("No finding-level evidence this turn.")
    st.caption(
        "Classifier: operating-point-normalised score (0.5 = the model's calibrated threshold), not a probability. "
        "Retrieval prevalence: how many of the most similar prior reports mention the finding (a prior, not a vote)."
    )
    tools = tool_summary(turn.evidence, turn.roles)
    if tools:
        st.caption(
            "Tools: "
            + " · ".join(
                f"{t['tool']} {':material/check:' if t['ok'] else ':material/close:'}"
                + (f" {t['latency_ms']} ms" if t["latency_ms"] is not None else "")
                + (f" ({t['error'][:80]})" if t["error"] else "")
                for t in tools
            )
        )
    priors = prior_reports(turn.evidence)
    if priors:
        st.markdown("**Similar prior reports**")
        for i, r in enumerate(priors, 1):
            labels = ", ".join(display_name(x) for x in r.labels) if r.labels else "no labelled findings"
            with st.expander(f"#{i} - similarity {r.score:.2f} - {labels}"):
                st.markdown(escape(r.text))  # corpus text shown verbatim, never as links/images
